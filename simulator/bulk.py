"""Bulk data for benchmarks: up to millions of leads and tens of millions of activities, written with PostgreSQL COPY."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from dataclasses import dataclass

import numpy as np
from django.db import connection, transaction
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


def _defaults(model, provided: set[str]) -> tuple[list[str], list[str]]:
    """Every concrete column the caller does not provide, with its model default in COPY
    text (Django defaults live in Python, not in the table, so COPY must send them)."""
    names, values = [], []
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
        names.append(f.column)
        values.append(_copy_text(value))
    return names, values


def _copy(table: str, columns: list[str], lines: io.StringIO) -> None:
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT text)", lines
        )


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
    act_extra_cols, act_extra_vals = _defaults(LeadActivity, {*act_cols})
    act_tail = "\t".join(act_extra_vals)
    owner = np.repeat(np.arange(leads), counts.astype(np.int64))
    end_ts = end.timestamp()
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
        # Vectorized to strings, then one join: per-row datetime work would dominate.
        stamps = np.datetime_as_string(ts.astype("datetime64[s]"), unit="s").tolist()
        kind_part = [f"{k}\t{KIND_DIRECTION[k]}\t{KIND_CHANNEL[k]}" for k in kinds]
        tid = str(tenant.id)
        suffix = ("\t" + act_tail if act_tail else "") + "\n"
        buf = io.StringIO(
            "".join(
                f"{tid}\t{lead}\t{kind_part[k]}\t{stamp}+00:00\tbulk:{seed}:{lo + j}{suffix}"
                for j, (lead, k, stamp) in enumerate(
                    zip(lead_ids[who].tolist(), kind_idx.tolist(), stamps, strict=True)
                )
            )
        )
        _copy(LeadActivity._meta.db_table, act_cols + act_extra_cols, buf)

    if update_lead_clocks and activities:
        inbound = [k for k, d in KIND_DIRECTION.items() if d == "inbound"]
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {Lead._meta.db_table} AS l
                   SET last_activity_at = a.last_any, last_inbound_at = a.last_in
                  FROM (SELECT lead_id, max(occurred_at) AS last_any,
                               max(occurred_at) FILTER (WHERE kind = ANY(%s)) AS last_in
                          FROM {LeadActivity._meta.db_table}
                         WHERE tenant_id = %s AND source_event_id LIKE %s
                         GROUP BY lead_id) AS a
                 WHERE l.id = a.lead_id
                """,
                [inbound, tenant.id, f"bulk:{seed}:%"],
            )
    return BulkResult(tenant.id, leads, activities, time.monotonic() - started)
