"""Bulk data for benchmarks: up to millions of leads and tens of millions of activities, written with PostgreSQL COPY."""

from __future__ import annotations

import datetime as dt
import io
import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from churnapp.models import KIND_CHANNEL, KIND_DIRECTION, Lead, LeadActivity, LeadStatus, Tenant
from simulator.world import (
    ACTIVITY_MIX,
    BUDGET_BANDS,
    FIRST_NAMES,
    INTENTS,
    LAST_NAMES,
    SOURCES,
    TIME_OF_DAY,
    TIMEZONES,
)

# Bulk activity adds our side of the conversation to the leads' own activity mix.
BULK_MIX: tuple[tuple[str, float], ...] = (
    *((kind, w * 0.8) for kind, w in ACTIVITY_MIX),
    ("email_outbound", 0.10),
    ("sms_outbound", 0.06),
    ("call_outbound", 0.02),
    ("appointment_booked", 0.012),
    ("showing_attended", 0.008),
)
CHUNK = 200_000  # rows per COPY buffer: bounded memory at any size
# From this many activities into an empty activity table, its secondary indexes are
# dropped for the load and built after it: one sort per index instead of tens of millions
# of random B-tree inserts, each a full-page image in the WAL once the indexes outgrow
# shared_buffers. Below it, inline maintenance is cheaper than the rebuild.
DEFER_INDEXES_FROM = 1_000_000
INDEX_BUILD_MEMORY = "512MB"  # maintenance_work_mem for the rebuilds: sorts stay in memory
INDEX_LOCK_WAIT = "5s"  # longer than this for the table lock: someone uses it, load inline


@dataclass(frozen=True)
class BulkResult:
    tenant_id: int
    leads: int
    activities: int
    seconds: float


def _weights(table) -> tuple[list, np.ndarray]:
    table = list(table)
    keys = [k for k, _ in table]
    w = np.array([v for _, v in table], dtype=float)
    return keys, w / w.sum()


def _copy_text(value) -> str:
    """One value in COPY's text format."""
    if value is None:
        return r"\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        value = json.dumps(value)
    if isinstance(value, list | tuple):
        value = "{" + ",".join('"' + str(v).replace('"', '\\"') + '"' for v in value) + "}"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, no extension
COPY_TRAILER = b"\xff\xff"


def _binary(field, value) -> bytes:
    """One value in COPY's binary format (length word and data), for the types the bulk
    rows' defaults have."""
    if value is None:
        return b"\xff\xff\xff\xff"
    internal = field.get_internal_type()
    if internal == "DateTimeField":
        data = np.array([round((value.timestamp() - PG_EPOCH) * 1e6)], dtype=">i8").tobytes()
    elif internal == "JSONField":
        data = b"\x01" + json.dumps(value).encode()  # jsonb version 1, then its text
    else:
        raise ValueError(f"{field.model.__name__}.{field.attname}: no binary COPY for {internal}")
    return len(data).to_bytes(4, "big", signed=True) + data


def _default_values(model, provided: set[str]) -> list[tuple]:
    """(field, value) of every concrete column the caller does not provide, with its model
    default (Django defaults live in Python, not in the table, so COPY must send them)."""
    out = []
    now = timezone.now()
    for f in model._meta.concrete_fields:
        if f.primary_key or f.attname in provided:
            continue
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            value = now
        elif f.has_default():
            value = f.get_default()
        elif f.null:
            value = None
        else:
            raise ValueError(f"{model.__name__}.{f.attname} has no default; bulk must set it")
        out.append((f, value))
    return out


def _defaults(model, provided: set[str]) -> tuple[list[str], list[str]]:
    """Column names and COPY text of the defaults of every column not provided."""
    values = _default_values(model, provided)
    return [f.column for f, _ in values], [_copy_text(v) for _, v in values]


class _ActivityRows:
    """Activity rows in COPY's binary format, built with numpy: one packed record type
    per kind (kind, direction and channel are the only fields whose length varies), so a
    chunk is a few array fills and tobytes() instead of a Python string per row, and the
    server parses no text. Rows keep their order within each kind; across kinds a chunk
    is grouped by kind (the rows, their ids aside, are the same)."""

    def __init__(
        self,
        *,
        tenant_id: int,
        kinds: list[str],
        event_prefix: str,
        digits: int,
        tail: bytes,
        columns: int,
    ) -> None:
        self.tenant_id = tenant_id
        self.digits = digits
        self.powers = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
        prefix = event_prefix.encode()
        self.types = []
        for kind in kinds:
            texts = [kind, KIND_DIRECTION[kind], KIND_CHANNEL[kind]]
            middle = b"".join(len(t).to_bytes(4, "big") + t.encode() for t in texts)
            record = np.dtype(
                [
                    ("ncols", ">i2"),
                    ("tenant_len", ">i4"),
                    ("tenant", ">i8"),
                    ("lead_len", ">i4"),
                    ("lead", ">i8"),
                    ("middle", f"V{len(middle)}"),
                    ("at_len", ">i4"),
                    ("at", ">i8"),
                    ("event_len", ">i4"),
                    ("event_prefix", f"V{len(prefix)}"),
                    ("event_digits", "u1", (digits,)),
                    ("tail", f"V{len(tail)}"),
                ]
            )
            template = np.zeros(1, dtype=record)
            template["ncols"] = columns
            template["tenant_len"] = template["lead_len"] = template["at_len"] = 8
            template["tenant"] = tenant_id
            template["middle"] = np.void(middle)
            template["event_len"] = len(prefix) + digits
            template["event_prefix"] = np.void(prefix)
            template["tail"] = np.void(tail)
            self.types.append(template)

    def encode(
        self,
        *,
        lead_ids: np.ndarray,
        kind_idx: np.ndarray,
        seconds: np.ndarray,
        numbers: np.ndarray,
    ) -> bytes:
        micros = (seconds - int(PG_EPOCH)) * 1_000_000
        order = np.argsort(kind_idx, kind="stable")
        bounds = np.searchsorted(kind_idx[order], np.arange(len(self.types) + 1))
        parts = [COPY_HEADER]
        for k, template in enumerate(self.types):
            sel = order[bounds[k] : bounds[k + 1]]
            if not len(sel):
                continue
            block = np.repeat(template, len(sel))
            block["lead"] = lead_ids[sel]
            block["at"] = micros[sel]
            block["event_digits"] = numbers[sel, None] // self.powers % 10 + ord("0")
            parts.append(block.tobytes())
        parts.append(COPY_TRAILER)
        return b"".join(parts)


def _skip_fk_triggers() -> None:
    """Every row written here references the given tenant or a lead written in the same
    transaction, so the per-row deferred foreign-key checks (two per activity, run at
    commit: half the load time at 3M rows) prove nothing. A superuser (tests, the
    embedded server) may skip them for this transaction; anyone else keeps them."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
    except DatabaseError:
        pass


def _copy(
    table: str, columns: list[str], lines: io.StringIO | io.BytesIO, fmt: str = "text"
) -> None:
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT {fmt})",
            lines,
            size=1 << 20,  # psycopg2 reads 8 kB per call by default
        )


_DONE = object()


def _prefetched(chunks: Iterator, depth: int = 2) -> Iterator:
    """`chunks` drawn on a second thread, up to `depth` ahead: the next COPY buffer is built
    while PostgreSQL parses the current one (psycopg2 releases the GIL while it sends)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        ready.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item = _DONE
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            item = exc
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    producer = threading.Thread(target=produce, name="bulk-chunks", daemon=True)
    producer.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()


def _secondary_indexes(table: str) -> dict[str, str]:
    """Name -> CREATE INDEX statement of every index of `table` that backs no constraint
    (the primary key and unique constraints stay: their keys arrive in order, cheap)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, pg_get_indexdef(i.indexrelid)
              FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = %s::regclass
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
             ORDER BY c.relname
            """,
            [table],
        )
        return dict(cursor.fetchall())


@contextmanager
def _indexes_built_after(table: str, *, enabled: bool) -> Iterator[bool]:
    """Inside: `table`'s secondary indexes are dropped if `enabled` and the table is empty,
    and built again (same names and definitions) on the way out, in the same transaction.

    Only an empty table qualifies: rebuilding other tenants' rows would cost more than it
    saves. The table is locked (ACCESS EXCLUSIVE, as DROP INDEX needs) first and checked
    again under the lock; if the lock is not granted within INDEX_LOCK_WAIT (someone is
    using the table) or rows appeared, the savepoint is rolled back, which releases the
    lock, and the load maintains the indexes as it goes. Yields whether it dropped them."""
    dropped: dict[str, str] = {}
    if enabled and not _has_rows(table):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [INDEX_LOCK_WAIT])
                cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                if _has_rows(table):
                    raise _TableInUse
                dropped = _secondary_indexes(table)
                for name in dropped:
                    cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
                cursor.execute("SET LOCAL lock_timeout TO DEFAULT")
        except (_TableInUse, DatabaseError):
            dropped = {}
    yield bool(dropped)
    if dropped:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = %s", [INDEX_BUILD_MEMORY])
            for statement in dropped.values():
                cursor.execute(statement)
            cursor.execute("SET LOCAL maintenance_work_mem TO DEFAULT")


class _TableInUse(Exception):
    pass


def _has_rows(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        return cursor.fetchone()[0]


@transaction.atomic
def bulk_generate(
    *,
    tenant: Tenant,
    leads: int,
    activities: int,
    seed: int = 1,
    days: int = 90,
    end: dt.datetime | None = None,
    update_lead_clocks: bool = True,
) -> BulkResult:
    """Write `leads` leads and exactly `activities` activities for `tenant` with COPY.

    The leads carry the world's traits (source, intent, budget band, time zone) in the
    world's proportions; activity counts per lead are heavy-tailed, times follow the
    world's time-of-day curve over `days` days ending at `end`, kinds its activity mix
    plus our outbound touches. It draws volume, not the hidden dynamics: for causal
    truth use the World. Deterministic from `seed` (except created_at)."""
    if leads < 1 or activities < 0:
        raise ValueError("leads must be at least 1 and activities not negative")
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    end = (end or timezone.now()).astimezone(dt.UTC)
    span = dt.timedelta(days=days).total_seconds()
    prefix = f"bulk-{seed}-"
    with connection.cursor() as cursor:
        # A benchmark load: losing the last moments of it in a crash is acceptable.
        cursor.execute("SET LOCAL synchronous_commit TO off")
    _skip_fk_triggers()
    if Lead.objects.filter(tenant=tenant, external_id__startswith=prefix).exists():
        raise ValueError(f"tenant {tenant.slug} already has bulk leads of seed {seed}")

    # --- leads ---------------------------------------------------------------------------
    src_keys, src_w = _weights((k, v["weight"]) for k, v in SOURCES.items())
    int_keys, int_w = _weights((k, v["weight"]) for k, v in INTENTS.items())
    band_w = np.array([b[3] for b in BUDGET_BANDS])
    band_w = band_w / band_w.sum()
    tz_keys, tz_w = _weights(TIMEZONES)
    source = rng.choice(len(src_keys), size=leads, p=src_w)
    intent = rng.choice(len(int_keys), size=leads, p=int_w)
    band = rng.choice(len(BUDGET_BANDS), size=leads, p=band_w)
    tz = rng.choice(len(tz_keys), size=leads, p=tz_w)
    lows = np.array([b[1] for b in BUDGET_BANDS])[band]
    highs = np.array([b[2] for b in BUDGET_BANDS])[band]
    budget = (rng.uniform(lows, highs) // 1000 * 1000).astype(np.int64)
    status_draw = rng.random(leads)
    first = rng.integers(0, len(FIRST_NAMES), size=leads)
    last = rng.integers(0, len(LAST_NAMES), size=leads)
    created_offsets = rng.uniform(0, span, size=leads)

    lead_cols = [
        "tenant_id",
        "external_id",
        "first_name",
        "last_name",
        "email",
        "timezone",
        "source",
        "budget",
        "status",
        "crm_created_at",
        "tags",
        "custom_fields",
    ]
    extra_cols, extra_vals = _defaults(Lead, set(lead_cols))
    tail = "\t".join(extra_vals)
    start_at = end - dt.timedelta(seconds=span)
    for lo in range(0, leads, CHUNK):
        buf = io.StringIO()
        for i in range(lo, min(leads, lo + CHUNK)):
            fn, ln = FIRST_NAMES[first[i]], LAST_NAMES[last[i]]
            status = (
                LeadStatus.LOST
                if status_draw[i] < 0.12
                else LeadStatus.CONVERTED
                if status_draw[i] > 0.95
                else LeadStatus.ACTIVE
            )
            row = [
                str(tenant.id),
                f"{prefix}{i:08d}",
                fn,
                ln,
                f"{fn.lower()}.{ln.lower()}.{i}@bulk.example",
                tz_keys[tz[i]],
                src_keys[source[i]],
                f"{budget[i]}.00",
                status,
                (start_at + dt.timedelta(seconds=float(created_offsets[i]))).isoformat(),
                "{" + f'"intent:{int_keys[intent[i]]}"' + "}",
                json.dumps({"intent": int_keys[intent[i]]}),
            ]
            buf.write("\t".join(row) + ("\t" + tail if tail else "") + "\n")
        buf.seek(0)
        _copy(Lead._meta.db_table, lead_cols + extra_cols, buf)
    ids = dict(
        Lead.objects.filter(tenant=tenant, external_id__startswith=prefix).values_list(
            "external_id", "id"
        )
    )
    lead_ids = np.array([ids[f"{prefix}{i:08d}"] for i in range(leads)], dtype=np.int64)

    # --- activities -------------------------------------------------------------------------
    intent_rate = np.array([INTENTS[k]["rate"] for k in int_keys])[intent]
    source_rate = np.array([SOURCES[k]["rate"] for k in src_keys])[source]
    weight = intent_rate * source_rate * rng.lognormal(0.0, 0.8, size=leads)
    counts = rng.multinomial(activities, weight / weight.sum()) if activities else np.zeros(leads)
    kinds, kind_w = _weights(BULK_MIX)
    tod = np.array(TIME_OF_DAY) / sum(TIME_OF_DAY)
    tz_offset = np.array([-5, -6, -7, -8])[tz]  # standard time; close enough for volume
    act_cols = [
        "tenant_id",
        "lead_id",
        "kind",
        "direction",
        "channel",
        "occurred_at",
        "source_event_id",
    ]
    act_extra = _default_values(LeadActivity, {*act_cols})
    act_extra_cols = [f.column for f, _ in act_extra]
    owner = np.repeat(np.arange(leads), counts.astype(np.int64))
    end_ts = end.timestamp()
    # The lead clocks are kept here as the rows are drawn: reading 30M rows back to
    # find them would cost as much as a third of the load.
    last_any = np.full(leads, -np.inf)
    last_in = np.full(leads, -np.inf)
    is_inbound = np.array([KIND_DIRECTION[k] == "inbound" for k in kinds])
    rows = _ActivityRows(
        tenant_id=tenant.id,
        kinds=kinds,
        event_prefix=f"bulk:{seed}:",
        digits=max(9, len(str(max(activities - 1, 0)))),
        tail=b"".join(_binary(f, v) for f, v in act_extra),
        columns=len(act_cols) + len(act_extra),
    )

    def chunks() -> Iterator[io.BytesIO]:
        # Runs on the prefetch thread; the only thread that draws from rng from here on.
        for lo in range(0, activities, CHUNK):
            hi = min(activities, lo + CHUNK)
            who = owner[lo:hi]
            n = hi - lo
            kind_idx = rng.choice(len(kinds), size=n, p=kind_w)
            day = rng.integers(0, max(1, days), size=n)
            local_hour = rng.choice(24, size=n, p=tod)
            seconds = rng.integers(0, 3600, size=n)
            utc_hour = local_hour - tz_offset[who]
            ts = end_ts - span + day * 86400.0 + utc_hour * 3600.0 + seconds
            ts = np.minimum(ts, end_ts - 1)
            np.maximum.at(last_any, who, ts)
            inbound_rows = is_inbound[kind_idx]
            np.maximum.at(last_in, who[inbound_rows], ts[inbound_rows])
            yield io.BytesIO(
                rows.encode(
                    lead_ids=lead_ids[who],
                    kind_idx=kind_idx,
                    seconds=ts.astype(np.int64),  # whole seconds, truncated as before
                    numbers=np.arange(lo, hi, dtype=np.int64),
                )
            )

    table = LeadActivity._meta.db_table
    with _indexes_built_after(table, enabled=activities >= DEFER_INDEXES_FROM):
        for buf in _prefetched(chunks()):
            _copy(table, act_cols + act_extra_cols, buf, fmt="binary")

    if update_lead_clocks and activities:
        _lead_clocks_write(lead_ids, last_any, last_in)
    return BulkResult(tenant.id, leads, activities, time.monotonic() - started)


def _array_text(values) -> str:
    return "{" + ",".join(values) + "}"


def _lead_clocks_write(lead_ids: np.ndarray, last_any: np.ndarray, last_in: np.ndarray) -> None:
    """last_activity_at / last_inbound_at of every lead with activity, in set-based
    UPDATEs of CHUNK leads (arrays travel as text literals: fast to build and parse)."""
    seen = np.flatnonzero(np.isfinite(last_any))
    with connection.cursor() as cursor:
        for lo in range(0, len(seen), CHUNK):
            part = seen[lo : lo + CHUNK]
            inbound = last_in[part]
            cursor.execute(
                f"""
                UPDATE {Lead._meta.db_table} AS l
                   SET last_activity_at = to_timestamp(v.last_any),
                       last_inbound_at = to_timestamp(v.last_in)
                  FROM unnest(%s::bigint[], %s::float8[], %s::float8[]) AS v(id, last_any, last_in)
                 WHERE l.id = v.id
                """,
                [
                    _array_text(map(str, lead_ids[part].tolist())),
                    _array_text(map(str, last_any[part].astype(np.int64).tolist())),
                    _array_text(
                        str(int(x)) if np.isfinite(x) else "NULL" for x in inbound.tolist()
                    ),
                ],
            )
