"""Bulk history import: a CSV event log in through COPY, leads created on the way."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import psycopg2
from django.db import DataError, connection, transaction
from django.utils import timezone
from psycopg2.extras import execute_values

from churnapp.exceptions import ApplicationError
from churnapp.ml.synthetic import SyntheticEvent, SyntheticLead
from churnapp.models import (
    KIND_CHANNEL,
    KIND_DIRECTION,
    ActivityKind,
    Direction,
    Lead,
    LeadActivity,
    LeadStatus,
    RiskTier,
    Tenant,
)

LEAD = Lead._meta.db_table
ACTIVITY = LeadActivity._meta.db_table


@dataclass
class ImportReport:
    rows_read: int = 0
    activities_created: int = 0
    duplicates: int = 0
    leads_created: int = 0
    unknown_kinds: dict[str, int] = field(default_factory=dict)  # skipped, by raw kind

    @property
    def skipped(self) -> int:
        return sum(self.unknown_kinds.values())


def _kind_case(column: str) -> str:
    direction = " ".join(f"WHEN '{k}' THEN '{d}'" for k, d in KIND_DIRECTION.items())
    channel = " ".join(f"WHEN '{k}' THEN '{c}'" for k, c in KIND_CHANNEL.items())
    return f"CASE {column} {direction} END", f"CASE {column} {channel} END"


@transaction.atomic
def events_import(
    *,
    tenant: Tenant,
    stream: IO[str],
    lead_column: str = "lead_external_id",
    time_column: str = "occurred_at",
    kind_column: str = "kind",
    value_column: str | None = "value",
    kind_map: dict[str, str] | None = None,
    skip_unknown: bool = False,
    time_zone: str = "UTC",
) -> ImportReport:
    """Load a CSV event log (header row required) with one COPY into a staging table,
    then set-based inserts. Kinds pass through `kind_map` first; kinds still unknown
    abort the import with their counts, or with `skip_unknown` are skipped and counted.
    Re-importing the same file creates nothing new (event ids derive from the row)."""
    header = next(csv.reader([stream.readline()]), None)
    if not header:
        raise ApplicationError("The file is empty; expected a CSV header row.", code="empty_file")
    header = [h.strip() for h in header]
    wanted = {"lead": lead_column, "time": time_column, "kind": kind_column}
    if value_column and value_column in header:
        wanted["value"] = value_column
    missing = [c for c in wanted.values() if c not in header]
    if missing:
        raise ApplicationError(
            f"Missing column(s) {', '.join(missing)}; the header has {', '.join(header)}.",
            code="missing_columns",
        )
    staging_cols = [f"c{i}" for i in range(len(header))]
    col = {key: staging_cols[header.index(name)] for key, name in wanted.items()}
    mapping = {**(kind_map or {})}
    bad_targets = {v for v in mapping.values() if v not in ActivityKind.values}
    if bad_targets:
        raise ApplicationError(
            f"--kind-map targets unknown kind(s): {', '.join(sorted(bad_targets))}.",
            code="bad_kind_map",
        )
    report = ImportReport()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        # Dropped at commit; dropped here too when an outer transaction runs two imports.
        raw.execute("DROP TABLE IF EXISTS import_raw, import_map, import_events")
        raw.execute(
            "CREATE TEMP TABLE import_raw ("
            + ", ".join(f"{c} text" for c in staging_cols)
            + ") ON COMMIT DROP"
        )
        raw.copy_expert(
            f"COPY import_raw ({', '.join(staging_cols)}) FROM STDIN WITH (FORMAT csv)", stream
        )
        raw.execute("SELECT count(*) FROM import_raw")
        report.rows_read = raw.fetchone()[0]
        raw.execute("CREATE TEMP TABLE import_map (raw text PRIMARY KEY, kind text) ON COMMIT DROP")
        if mapping:
            execute_values(raw, "INSERT INTO import_map VALUES %s", list(mapping.items()))
        value_expr = (
            f"NULLIF(trim(r.{col['value']}), '')::double precision"
            if "value" in col
            else "NULL::double precision"
        )
        try:
            raw.execute(
                f"""
                CREATE TEMP TABLE import_events ON COMMIT DROP AS
                SELECT trim(r.{col["lead"]}) AS ext,
                       CASE WHEN trim(r.{col["time"]}) ~ %(offset)s
                            THEN trim(r.{col["time"]})::timestamptz
                            ELSE trim(r.{col["time"]})::timestamp AT TIME ZONE %(tz)s END AS ts,
                       trim(r.{col["kind"]}) AS raw_kind,
                       COALESCE(m.kind, trim(r.{col["kind"]})) AS kind,
                       {value_expr} AS value,
                       r.{col["lead"]} || '|' || r.{col["time"]} || '|' || r.{col["kind"]}
                           || '|' || COALESCE({"r." + col["value"] if "value" in col else "NULL"}, '') AS line
                FROM import_raw r LEFT JOIN import_map m ON m.raw = trim(r.{col["kind"]})
                """,
                # A time of day followed by Z or an offset; anything else is local time
                # in `time_zone` (a session time zone would leak into the caller's reads).
                {"offset": r"\d:\d\d(:\d\d(\.\d+)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)$", "tz": time_zone},
            )
        except (DataError, psycopg2.DataError) as exc:
            raise ApplicationError(
                f"A time or value cell cannot be read: {str(exc).splitlines()[0]}",
                code="bad_cell",
            )
        raw.execute("SELECT count(*) FROM import_events WHERE ext = '' OR ext IS NULL")
        if raw.fetchone()[0]:
            raise ApplicationError(
                "Some rows have no lead id; nothing was imported.", code="bad_row"
            )
        raw.execute(
            "SELECT raw_kind, count(*) FROM import_events WHERE kind <> ALL(%s) GROUP BY raw_kind",
            [list(ActivityKind.values)],
        )
        unknown = {k: n for k, n in raw.fetchall()}
        if unknown and not skip_unknown:
            listed = ", ".join(f"{k!r} x{n}" for k, n in sorted(unknown.items()))
            raise ApplicationError(
                f"Unknown kind(s): {listed}. Map them with --kind-map RAW=KIND "
                f"(kinds: {', '.join(ActivityKind.values)}) or pass --skip-unknown; "
                "nothing was imported.",
                code="unknown_kinds",
                details={"unknown_kinds": unknown},
            )
        report.unknown_kinds = unknown
        raw.execute("DELETE FROM import_events WHERE kind <> ALL(%s)", [list(ActivityKind.values)])
        now = timezone.now()
        raw.execute(
            f"""
            INSERT INTO {LEAD} (tenant_id, external_id, first_name, last_name, email, phone,
                timezone, source, pipeline_stage, status, consent_sms, consent_email, dnd,
                dnd_channels, tags, custom_fields, crm_created_at, created_at, updated_at,
                risk_tier)
            SELECT %(tenant)s, ext, '', '', '', '', '', 'import', '', %(active)s, true, true,
                   false, '{{}}', '{{}}', '{{}}', MIN(ts), %(now)s, %(now)s, %(unscored)s
            FROM import_events GROUP BY ext
            ON CONFLICT (tenant_id, external_id) DO NOTHING
            """,
            {
                "tenant": tenant.id,
                "active": LeadStatus.ACTIVE,
                "now": now,
                "unscored": RiskTier.UNSCORED,
            },
        )
        report.leads_created = raw.rowcount
        direction, channel = _kind_case("e.kind")
        raw.execute(
            f"""
            INSERT INTO {ACTIVITY} (tenant_id, lead_id, kind, direction, channel, occurred_at,
                                    source_event_id, value, payload, created_at)
            SELECT %(tenant)s, l.id, e.kind, {direction}, {channel}, e.ts,
                   'import:' || md5(e.line), e.value, '{{}}', %(now)s
            FROM import_events e
            JOIN {LEAD} l ON l.tenant_id = %(tenant)s AND l.external_id = e.ext
            ON CONFLICT (tenant_id, source_event_id) DO NOTHING
            """,
            {"tenant": tenant.id, "now": now},
        )
        report.activities_created = raw.rowcount
        report.duplicates = report.rows_read - report.skipped - report.activities_created
        _lead_clocks_from_import(raw, tenant.id)
        # Fresh statistics, or the planner takes the bulk-loaded tables for empty ones.
        raw.execute(f"ANALYZE {LEAD}")
        raw.execute(f"ANALYZE {ACTIVITY}")
    return report


def _lead_clocks_from_import(raw, tenant_id: int) -> None:
    inbound = [k for k, d in KIND_DIRECTION.items() if d == Direction.INBOUND]
    raw.execute(
        f"""
        UPDATE {LEAD} l SET
            last_activity_at = GREATEST(l.last_activity_at, v.last_any),
            last_inbound_at = GREATEST(l.last_inbound_at, v.last_in),
            status = CASE WHEN v.won THEN %(converted)s
                          WHEN v.lost AND l.status <> %(converted)s THEN %(lost)s
                          ELSE l.status END
        FROM (
            SELECT l2.id, MAX(e.ts) AS last_any,
                   MAX(e.ts) FILTER (WHERE e.kind = ANY(%(inbound)s)) AS last_in,
                   BOOL_OR(e.kind = 'opportunity_won') AS won,
                   BOOL_OR(e.kind = 'opportunity_lost') AS lost
            FROM import_events e
            JOIN {LEAD} l2 ON l2.tenant_id = %(tenant)s AND l2.external_id = e.ext
            GROUP BY l2.id
        ) v
        WHERE l.id = v.id
        """,
        {
            "tenant": tenant_id,
            "inbound": inbound,
            "converted": LeadStatus.CONVERTED,
            "lost": LeadStatus.LOST,
        },
    )


def events_csv_write(events: Iterable[SyntheticEvent], out: IO[str]) -> int:
    """Write events in the import format (lead_external_id, occurred_at, kind, value).

    Not formula-neutralised, on purpose: this file is read back by `churn_import_events`,
    which must get the ids exactly as written (an apostrophe would become part of the id),
    and its ids come from the simulator's generator, not from outside."""
    writer = csv.writer(out)
    writer.writerow(["lead_external_id", "occurred_at", "kind", "value"])
    n = 0
    for e in events:
        writer.writerow(
            [
                e.lead_external_id,
                e.occurred_at.isoformat(),
                e.kind,
                "" if e.value is None else e.value,
            ]
        )
        n += 1
    return n


@transaction.atomic
def synthetic_history_load(
    *, tenant: Tenant, leads: list[SyntheticLead], events: list[SyntheticEvent]
) -> ImportReport:
    """Create the generator's leads (source, stage, creation time) and COPY its events in."""
    now = timezone.now()
    with connection.cursor() as cursor:
        execute_values(
            cursor.cursor,
            f"""
            INSERT INTO {LEAD} (tenant_id, external_id, first_name, last_name, email, phone,
                timezone, source, pipeline_stage, status, consent_sms, consent_email, dnd,
                dnd_channels, tags, custom_fields, crm_created_at, created_at, updated_at,
                risk_tier)
            VALUES %s ON CONFLICT (tenant_id, external_id) DO NOTHING
            """,
            [
                (
                    tenant.id,
                    lead.external_id,
                    "",
                    "",
                    "",
                    "",
                    "",
                    lead.source,
                    lead.pipeline_stage,
                    LeadStatus.ACTIVE,
                    True,
                    True,
                    False,
                    "{}",
                    "{}",
                    "{}",
                    lead.created_at,
                    now,
                    now,
                    RiskTier.UNSCORED,
                )
                for lead in leads
            ],
            page_size=1000,
        )
    buffer = io.StringIO()
    events_csv_write(events, buffer)
    buffer.seek(0)
    return events_import(tenant=tenant, stream=buffer)


def as_aware(value: dt.datetime) -> dt.datetime:
    return value if timezone.is_aware(value) else timezone.make_aware(value, dt.UTC)
