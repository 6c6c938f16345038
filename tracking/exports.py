"""Streamed CSV exports: rows come from .iterator() in chunks, never all in memory."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from churnapp.csv_safety import csv_text_safe
from interventions.models import Intervention
from notifications.models import Message
from tracking.models import (
    EscalationDailyRollup,
    InterventionDailyRollup,
    MessageDailyRollup,
    RollupDay,
    TrackingEvent,
)
from tracking.rollup_sql import day_bounds

CHUNK_SIZE = 2000


class _Echo:
    """A file-like object whose write returns the line, for csv.writer into a generator."""

    def write(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class Dataset:
    model: type
    columns: tuple[str, ...]
    time_field: str  # what from/to filter on
    is_day: bool = False
    related: tuple[str, ...] = ()


DATASETS: dict[str, Dataset] = {
    "interventions": Dataset(
        Intervention,
        (
            "id",
            "lead_id",
            "lead__external_id",
            "episode",
            "stage",
            "is_holdout",
            "variant__key",
            "status",
            "outcome",
            "outcome_reason",
            "tier_at_start",
            "score_at_start",
            "detected_at",
            "planned_at",
            "activated_at",
            "engaged_at",
            "resolved_at",
            "window_ends_at",
        ),
        "planned_at",
    ),
    "messages": Dataset(
        Message,
        (
            "id",
            "lead_id",
            "agent_id",
            "channel",
            "provider",
            "template_key",
            "variant",
            "status",
            "status_reason",
            "attempts",
            "cost",
            "cost_currency",
            "metadata",
            "created_at",
            "sent_at",
            "delivered_at",
            "opened_at",
            "clicked_at",
            "replied_at",
        ),
        "created_at",
    ),
    "events": Dataset(
        TrackingEvent,
        (
            "id",
            "kind",
            "lead_id",
            "intervention_id",
            "message_id",
            "escalation_id",
            "stage",
            "channel",
            "data",
            "occurred_at",
        ),
        "occurred_at",
    ),
    "intervention-rollups": Dataset(
        InterventionDailyRollup,
        tuple(
            f.name
            for f in InterventionDailyRollup._meta.concrete_fields
            if f.name not in ("id", "tenant")
        ),
        "day",
        is_day=True,
    ),
    "message-rollups": Dataset(
        MessageDailyRollup,
        tuple(
            f.name
            for f in MessageDailyRollup._meta.concrete_fields
            if f.name not in ("id", "tenant")
        ),
        "day",
        is_day=True,
    ),
    "escalation-rollups": Dataset(
        EscalationDailyRollup,
        tuple(
            f.name
            for f in EscalationDailyRollup._meta.concrete_fields
            if f.name not in ("id", "tenant")
        ),
        "day",
        is_day=True,
    ),
}


def export_queryset(
    *, name: str, tenant_id: int, first_day: dt.date | None, last_day: dt.date | None
) -> QuerySet:
    dataset = DATASETS[name]
    qs = dataset.model._default_manager.filter(tenant_id=tenant_id)
    if dataset.is_day:
        # Only whole days: a running day's rows from the intraday refresh cover its
        # morning, and a sum over exported days would silently miss the rest.
        qs = qs.exclude(
            day__in=RollupDay.objects.filter(tenant_id=tenant_id, through__isnull=False).values(
                "day"
            )
        )
    if first_day is not None and last_day is not None:
        if dataset.is_day:
            qs = qs.filter(day__gte=first_day, day__lte=last_day)
        else:
            start, end = day_bounds(first_day, last_day)
            qs = qs.filter(
                **{f"{dataset.time_field}__gte": start, f"{dataset.time_field}__lt": end}
            )
    return qs.order_by(*(("day", "id") if dataset.is_day else ("id",)))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        # JSON text starts with { or [: never a formula.
        return json.dumps(value, separators=(",", ":"), default=str)
    if isinstance(value, str):
        return csv_text_safe(value)
    # Numbers (a negative one starts with "-"), dates, booleans, UUIDs: not text.
    return str(value)


def csv_rows(queryset: QuerySet, columns: Iterable[str]) -> Iterator[str]:
    """Header then one CSV line per row, pulled from the database in chunks."""
    columns = tuple(columns)
    writer = csv.writer(_Echo())
    yield writer.writerow(columns)
    for row in queryset.values_list(*columns).iterator(chunk_size=CHUNK_SIZE):
        yield writer.writerow([_cell(v) for v in row])


def csv_response(rows: Iterator[str], filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def dataset_response(
    *, name: str, tenant_id: int, first_day: dt.date | None, last_day: dt.date | None
) -> StreamingHttpResponse:
    qs = export_queryset(name=name, tenant_id=tenant_id, first_day=first_day, last_day=last_day)
    suffix = f"-{first_day}-{last_day}" if first_day else ""
    return csv_response(csv_rows(qs, DATASETS[name].columns), f"{name}{suffix}.csv")


def admin_export_action(name: str, columns: Iterable[str] | None = None) -> Callable:
    """An admin action streaming the selected rows (already tenant-scoped) as CSV."""
    columns = tuple(columns or DATASETS[name].columns)

    def export_csv(modeladmin, request, queryset):
        return csv_response(csv_rows(queryset.order_by("pk"), columns), f"{name}.csv")

    export_csv.short_description = "Export selected as CSV"
    export_csv.__name__ = f"export_{name.replace('-', '_')}_csv"
    return export_csv
