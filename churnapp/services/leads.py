"""Lead upserts by the CRM's external id: validate everything first, then write all
or nothing in a few queries (one SELECT, one INSERT, one UPDATE per batch)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from churnapp.exceptions import ApplicationError, ConflictError
from churnapp.models import Agent, Lead, LeadStatus, Tenant
from churnapp.normalize import email_check, phone_to_e164, timezone_check

MAX_BATCH = 1000
DND_CHANNELS = ("sms", "email", "call", "whatsapp", "gmb", "fb")

# The lead fields a CRM may set. Absent keys are left as they are on update.
TEXT_FIELDS = ("first_name", "last_name", "source", "pipeline_stage")
BOOL_FIELDS = ("consent_sms", "consent_email", "dnd")
WRITABLE_FIELDS = frozenset(
    (
        *TEXT_FIELDS,
        *BOOL_FIELDS,
        "email",
        "phone",
        "timezone",
        "budget",
        "status",
        "dnd_channels",
        "tags",
        "custom_fields",
        "crm_created_at",
        "assigned_agent_id",
        "assigned_agent_ghl_user_id",
    )
)


@dataclass(frozen=True)
class LeadUpsertOutcome:
    lead: Lead
    created: bool

    @property
    def status(self) -> str:
        return "created" if self.created else "updated"


class _AgentLookup:
    """The tenant's agents named by a batch, fetched in one query."""

    def __init__(self, tenant: Tenant, items: Sequence[Mapping[str, Any]]):
        pks = {i["assigned_agent_id"] for i in items if i.get("assigned_agent_id") is not None}
        ghl_ids = {
            i["assigned_agent_ghl_user_id"] for i in items if i.get("assigned_agent_ghl_user_id")
        }
        pks = {pk for pk in pks if isinstance(pk, int) and not isinstance(pk, bool)}
        ghl_ids = {g for g in ghl_ids if isinstance(g, str)}
        agents = list(
            Agent.objects.filter(tenant=tenant).filter(Q(pk__in=pks) | Q(ghl_user_id__in=ghl_ids))
            if pks or ghl_ids
            else []
        )
        self.by_pk = {a.pk: a for a in agents}
        self.by_ghl = {a.ghl_user_id: a for a in agents if a.ghl_user_id}


def _clean_value(name: str, value: Any, agents: _AgentLookup) -> tuple[str, Any]:
    """(model attribute, normalized value) for one input field; ValueError if invalid."""
    if name in TEXT_FIELDS:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return name, value.strip()
    if name in BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return name, value
    if name == "email":
        return name, email_check(_string(value))
    if name == "phone":
        return name, phone_to_e164(_string(value))
    if name == "timezone":
        return name, timezone_check(_string(value))
    if name == "status":
        if value not in LeadStatus.values:
            raise ValueError(f"must be one of {', '.join(LeadStatus.values)}")
        return name, value
    if name == "budget":
        if value is None or value == "":
            return name, None
        if isinstance(value, bool):
            raise ValueError("must be a decimal number")
        try:
            return name, Decimal(str(value))
        except InvalidOperation:
            raise ValueError("must be a decimal number")
    if name in ("tags", "dnd_channels"):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        cleaned = list(dict.fromkeys(v.strip() for v in value if v.strip()))
        if name == "dnd_channels":
            cleaned = [v.lower() for v in cleaned]
            unknown = sorted(set(cleaned) - set(DND_CHANNELS))
            if unknown:
                raise ValueError(f"unknown channel(s) {unknown}; expected {list(DND_CHANNELS)}")
        return name, cleaned
    if name == "custom_fields":
        if not isinstance(value, dict):
            raise ValueError("must be an object")
        return name, value
    if name == "crm_created_at":
        if value is None:
            return name, None
        if not isinstance(value, dt.datetime) or timezone.is_naive(value):
            raise ValueError("must be a datetime with a time zone")
        return name, value
    if name == "assigned_agent_id":
        if value is None:
            return "assigned_agent", None
        agent = agents.by_pk.get(value) if isinstance(value, int) else None
        if agent is None:
            raise ValueError(f"no agent with id {value!r} in this tenant")
        return "assigned_agent", agent
    if name == "assigned_agent_ghl_user_id":
        if value in (None, ""):
            return "assigned_agent", None
        agent = agents.by_ghl.get(value)
        if agent is None:
            raise ValueError(f"no agent with GHL user id {value!r} in this tenant")
        return "assigned_agent", agent
    raise ValueError("unknown field")


def _string(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _clean_fields(fields: Mapping[str, Any], agents: _AgentLookup) -> tuple[dict, dict[str, str]]:
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if "assigned_agent_id" in fields and "assigned_agent_ghl_user_id" in fields:
        errors["assigned_agent_id"] = (
            "give assigned_agent_id or assigned_agent_ghl_user_id, not both"
        )
    for name, value in fields.items():
        if name in errors:
            continue
        try:
            attr, normalized = _clean_value(name, value, agents)
            # The model's own validators (max lengths, decimal digits, array items).
            if attr != "assigned_agent":
                Lead._meta.get_field(attr).clean(normalized, None)
        except ValueError as exc:
            errors[name] = str(exc)
            continue
        except ValidationError as exc:
            errors[name] = "; ".join(exc.messages)
            continue
        cleaned[attr] = normalized
    return cleaned, errors


def lead_fields_clean(
    *, tenant: Tenant, fields: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Normalize CRM fields for a lead: (model attributes, errors by input field)."""
    return _clean_fields(fields, _AgentLookup(tenant, [fields]))


def leads_bulk_clean(
    *,
    tenant: Tenant,
    items: Sequence[Mapping[str, Any]],
    indexes: Sequence[int] | None = None,
) -> tuple[list[tuple[str, dict]], dict[str, dict[str, str]]]:
    """Validate and normalize a batch without writing: ([(external_id, attributes)] of
    the valid items, {item index: {field: problem}} of the invalid ones). `indexes`
    names the items' positions in the caller's request when it passes a subset."""
    agents = _AgentLookup(tenant, items)
    errors: dict[str, dict[str, str]] = {}
    prepared: list[tuple[str, dict]] = []
    first_index: dict[str, int] = {}
    positions = indexes if indexes is not None else range(len(items))
    for index, item in zip(positions, items, strict=True):
        item_errors: dict[str, str] = {}
        external_id = item.get("external_id")
        if not isinstance(external_id, str) or not external_id.strip():
            item_errors["external_id"] = "required (a non-empty string)"
            external_id = ""
        else:
            external_id = external_id.strip()
            if len(external_id) > 128:
                item_errors["external_id"] = "at most 128 characters"
            elif external_id in first_index:
                item_errors["external_id"] = (
                    f"repeats item {first_index[external_id]}; send each lead once per batch"
                )
            else:
                first_index[external_id] = index
        fields = {k: v for k, v in item.items() if k != "external_id"}
        for name in sorted(set(fields) - WRITABLE_FIELDS):
            item_errors[name] = "unknown field"
        cleaned, field_errors = _clean_fields(
            {k: v for k, v in fields.items() if k in WRITABLE_FIELDS}, agents
        )
        item_errors.update(field_errors)
        if item_errors:
            errors[str(index)] = item_errors
        else:
            prepared.append((external_id, cleaned))
    return prepared, errors


def leads_bulk_upsert(
    *,
    tenant: Tenant,
    items: Sequence[Mapping[str, Any]],
    crm_state_at: dt.datetime | None = None,
) -> list[LeadUpsertOutcome]:
    """Create or update up to MAX_BATCH leads by external id, all or nothing.

    Each item is a mapping with `external_id` and any of WRITABLE_FIELDS. Every item is
    validated first; if any is invalid, ApplicationError lists the errors per item
    index and per field, and nothing is written.

    `crm_state_at`: the instant of the CRM's state these items carry (the API passes the
    time of the call). Each lead's `crm_updated_at` moves forward to it, so a contact
    webhook about an earlier change, delivered late, is not applied over this write.
    """
    if len(items) > MAX_BATCH:
        raise ApplicationError(f"At most {MAX_BATCH} leads per request.", code="batch_too_large")
    if not items:
        raise ApplicationError("No leads given.", code="empty_batch")
    prepared, errors = leads_bulk_clean(tenant=tenant, items=items)
    if errors:
        raise ApplicationError(
            f"{len(errors)} of {len(items)} leads are invalid; nothing was stored.",
            details={"items": errors},
        )
    for attempt in range(3):
        try:
            return _write(tenant=tenant, prepared=prepared, crm_state_at=crm_state_at)
        except IntegrityError:
            # Another request created one of these leads between our SELECT and INSERT;
            # the next attempt finds it and updates it instead.
            if attempt == 2:
                raise ConflictError("Concurrent writes to the same leads; retry the request.")
    raise AssertionError("unreachable")


@transaction.atomic
def _write(
    *, tenant: Tenant, prepared: list[tuple[str, dict]], crm_state_at: dt.datetime | None
) -> list[LeadUpsertOutcome]:
    now = timezone.now()
    existing = {
        lead.external_id: lead
        for lead in Lead.objects.select_for_update()
        .filter(tenant=tenant, external_id__in=[ext for ext, _ in prepared])
        .order_by("pk")  # lock in pk order: no deadlock between overlapping batches
    }
    outcomes: list[LeadUpsertOutcome] = []
    to_create: list[Lead] = []
    to_update: list[Lead] = []
    update_fields: set[str] = set()
    for external_id, fields in prepared:
        lead = existing.get(external_id)
        if lead is None:
            lead = Lead(tenant=tenant, external_id=external_id, **fields)
            lead.crm_updated_at = crm_state_at
            to_create.append(lead)
            outcomes.append(LeadUpsertOutcome(lead=lead, created=True))
        else:
            for attr, value in fields.items():
                setattr(lead, attr, value)
            lead.updated_at = now
            update_fields.update(fields)
            if crm_state_at is not None and (
                lead.crm_updated_at is None or lead.crm_updated_at < crm_state_at
            ):
                lead.crm_updated_at = crm_state_at
                update_fields.add("crm_updated_at")
            to_update.append(lead)
            outcomes.append(LeadUpsertOutcome(lead=lead, created=False))
    if to_create:
        Lead.objects.bulk_create(to_create, batch_size=MAX_BATCH)
    if to_update:
        Lead.objects.bulk_update(
            to_update, fields=sorted(update_fields | {"updated_at"}), batch_size=250
        )
    return outcomes


def lead_upsert(
    *,
    tenant: Tenant,
    external_id: str,
    crm_state_at: dt.datetime | None = None,
    **fields: Any,
) -> tuple[Lead, bool]:
    """Create or update one lead by external id: (lead, created). Fields as in
    WRITABLE_FIELDS; ApplicationError with per-field details when invalid.
    `crm_state_at` as in leads_bulk_upsert."""
    try:
        (outcome,) = leads_bulk_upsert(
            tenant=tenant,
            items=[{"external_id": external_id, **fields}],
            crm_state_at=crm_state_at,
        )
    except ApplicationError as exc:
        item_errors = (
            exc.details.get("items", {}).get("0") if isinstance(exc.details, dict) else None
        )
        if item_errors is None:
            raise
        first = next(iter(item_errors.items()))
        raise ApplicationError(f"Invalid lead: {first[0]}: {first[1]}", details=item_errors)
    return outcome.lead, outcome.created


@transaction.atomic
def lead_mark_deleted(*, tenant: Tenant, external_id: str, deleted_at: dt.datetime) -> Lead | None:
    """Mark a lead deleted in the CRM (kept for history). None if we never knew it."""
    lead = Lead.objects.select_for_update().filter(tenant=tenant, external_id=external_id).first()
    if lead is None:
        return None
    if lead.deleted_at is None:
        lead.deleted_at = deleted_at
        lead.save(update_fields=["deleted_at", "updated_at"])
    return lead
