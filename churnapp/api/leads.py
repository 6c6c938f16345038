"""Lead endpoints: list with filters, retrieve (by id or external id), upsert, bulk upsert."""

from __future__ import annotations

import django_filters
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from churnapp import selectors
from churnapp.api.common import (
    AwareDateTimeField,
    UtcDateTimeFilter,
    batch_items,
    error_responses,
    items_partition,
)
from churnapp.exceptions import ApplicationError, NotFoundError
from churnapp.models import Lead, LeadStatus, RiskTier
from churnapp.services.leads import (
    DND_CHANNELS,
    MAX_BATCH,
    lead_upsert,
    leads_bulk_clean,
    leads_bulk_upsert,
)


class LeadOutputSerializer(serializers.ModelSerializer):
    # Not EmailField: many CRM contacts have no email, and "" is not a valid `format: email`.
    email = serializers.CharField(read_only=True, help_text="Empty when the CRM has none.")
    assigned_agent_id = serializers.IntegerField(read_only=True, allow_null=True)
    assigned_agent_ghl_user_id = serializers.CharField(
        source="assigned_agent.ghl_user_id", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Lead
        fields = [
            "id",
            "external_id",
            "first_name",
            "last_name",
            "email",
            "phone",
            "timezone",
            "source",
            "pipeline_stage",
            "budget",
            "status",
            "assigned_agent_id",
            "assigned_agent_ghl_user_id",
            "consent_sms",
            "consent_email",
            "dnd",
            "dnd_channels",
            "tags",
            "custom_fields",
            "crm_created_at",
            "created_at",
            "updated_at",
            "deleted_at",
            "last_activity_at",
            "last_inbound_at",
            "risk_score",
            "risk_tier",
            "risk_scored_at",
        ]
        read_only_fields = fields


class LeadInputSerializer(serializers.Serializer):
    """A lead as the CRM sends it. Only the fields sent are changed on update."""

    external_id = serializers.CharField(max_length=128)
    first_name = serializers.CharField(max_length=100, allow_blank=True, required=False)
    last_name = serializers.CharField(max_length=100, allow_blank=True, required=False)
    email = serializers.CharField(max_length=254, allow_blank=True, required=False)
    phone = serializers.CharField(
        max_length=40,
        allow_blank=True,
        required=False,
        help_text="Any common format; stored as E.164 (default region US).",
    )
    timezone = serializers.CharField(
        max_length=64, allow_blank=True, required=False, help_text="IANA name."
    )
    source = serializers.CharField(max_length=64, allow_blank=True, required=False)
    pipeline_stage = serializers.CharField(max_length=64, allow_blank=True, required=False)
    budget = serializers.DecimalField(
        max_digits=14, decimal_places=2, allow_null=True, required=False
    )
    status = serializers.ChoiceField(choices=LeadStatus.choices, required=False)
    assigned_agent_id = serializers.IntegerField(allow_null=True, required=False)
    assigned_agent_ghl_user_id = serializers.CharField(
        max_length=64, allow_null=True, allow_blank=True, required=False
    )
    consent_sms = serializers.BooleanField(required=False)
    consent_email = serializers.BooleanField(required=False)
    dnd = serializers.BooleanField(required=False)
    dnd_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=DND_CHANNELS), required=False
    )
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    custom_fields = serializers.DictField(required=False)
    crm_created_at = AwareDateTimeField(allow_null=True, required=False)


class LeadFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=LeadStatus.choices)
    risk_tier = django_filters.ChoiceFilter(choices=RiskTier.choices)
    source = django_filters.CharFilter()
    pipeline_stage = django_filters.CharFilter()
    assigned_agent = django_filters.NumberFilter(field_name="assigned_agent_id")
    assigned_agent_ghl_user_id = django_filters.CharFilter(field_name="assigned_agent__ghl_user_id")
    external_id = django_filters.CharFilter()
    updated_since = UtcDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    search = django_filters.CharFilter(
        method="filter_search", label="Words matched against name, email and external id."
    )
    include_deleted = django_filters.BooleanFilter(
        method="filter_include_deleted", label="Include leads deleted in the CRM."
    )

    class Meta:
        model = Lead
        fields: list[str] = []

    def filter_search(self, queryset, name, value: str):
        for word in value.split():
            queryset = queryset.filter(
                Q(first_name__icontains=word)
                | Q(last_name__icontains=word)
                | Q(email__icontains=word)
                | Q(external_id__icontains=word)
            )
        return queryset

    def filter_include_deleted(self, queryset, name, value: bool):
        return queryset if value else queryset.filter(deleted_at__isnull=True)

    @property
    def qs(self):
        queryset = super().qs
        # Deleted leads stay out unless asked for.
        if self.form.cleaned_data.get("include_deleted") is None:
            queryset = queryset.filter(deleted_at__isnull=True)
        return queryset


@extend_schema(tags=["leads"], responses={200: LeadOutputSerializer(many=True)})
class LeadListView(generics.ListAPIView):
    """The tenant's leads, filtered; CRM-deleted leads only with include_deleted=true."""

    serializer_class = LeadOutputSerializer
    filterset_class = LeadFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no tenant
            return Lead.objects.none()
        return selectors.lead_list(tenant=self.request.tenant, include_deleted=True)


@extend_schema(
    tags=["leads"],
    responses={200: LeadOutputSerializer, **error_responses(401, 404)},
)
class LeadDetailView(APIView):
    def get(self, request, lead_id: int):
        lead = selectors.lead_get(tenant=request.tenant, lead_id=lead_id)
        if lead is None:
            raise NotFoundError(f"No lead {lead_id} in this tenant.")
        return Response(LeadOutputSerializer(lead).data)


@extend_schema(
    tags=["leads"],
    parameters=[OpenApiParameter("external_id", str, OpenApiParameter.PATH)],
    responses={200: LeadOutputSerializer, **error_responses(401, 404)},
)
class LeadByExternalIdView(APIView):
    def get(self, request, external_id: str):
        lead = selectors.lead_get(tenant=request.tenant, external_id=external_id)
        if lead is None:
            raise NotFoundError(f"No lead with external id {external_id!r} in this tenant.")
        return Response(LeadOutputSerializer(lead).data)


class LeadUpsertView(APIView):
    """Create or update one lead by its external id (PUT; POST is accepted too)."""

    @extend_schema(
        tags=["leads"],
        request=LeadInputSerializer,
        responses={
            200: LeadOutputSerializer,
            201: LeadOutputSerializer,
            **error_responses(400, 401),
        },
    )
    def put(self, request):
        serializer = LeadInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The caller sends the CRM's state as of now: a contact webhook about an earlier
        # change that arrives later is then not applied over it.
        lead, created = lead_upsert(
            tenant=request.tenant, crm_state_at=timezone.now(), **serializer.validated_data
        )
        lead = selectors.lead_get(tenant=request.tenant, lead_id=lead.pk)
        return Response(
            LeadOutputSerializer(lead).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        tags=["leads"],
        request=LeadInputSerializer,
        responses={
            200: LeadOutputSerializer,
            201: LeadOutputSerializer,
            **error_responses(400, 401),
        },
    )
    def post(self, request):
        return self.put(request)


class LeadBulkItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    external_id = serializers.CharField()
    id = serializers.IntegerField()
    status = serializers.CharField(help_text="created or updated")


class LeadBulkOutputSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    items = LeadBulkItemResultSerializer(many=True)


class LeadBulkUpsertView(APIView):
    """Upsert up to 1,000 leads at once, all or nothing, with a result per item."""

    @extend_schema(
        tags=["leads"],
        request=inline_serializer(
            "LeadBulkUpsertRequest", {"items": LeadInputSerializer(many=True)}
        ),
        responses={200: LeadBulkOutputSerializer, **error_responses(400, 401)},
    )
    def post(self, request):
        items = batch_items(request.data, max_items=MAX_BATCH)
        valid, errors = items_partition(LeadInputSerializer, items)
        if errors:
            # Report every problem at once: type errors and, for the other items, the
            # domain ones (phone, time zone, agent, repeats).
            _, domain_errors = leads_bulk_clean(
                tenant=request.tenant,
                items=[data for _, data in valid],
                indexes=[index for index, _ in valid],
            )
            errors.update(domain_errors)
            raise ApplicationError(
                f"{len(errors)} of {len(items)} leads are invalid; nothing was stored.",
                details={"items": dict(sorted(errors.items(), key=lambda kv: int(kv[0])))},
            )
        outcomes = leads_bulk_upsert(
            tenant=request.tenant,
            items=[data for _, data in valid],
            crm_state_at=timezone.now(),
        )
        body = {
            "created": sum(o.created for o in outcomes),
            "updated": sum(not o.created for o in outcomes),
            "items": [
                {
                    "index": index,
                    "external_id": o.lead.external_id,
                    "id": o.lead.pk,
                    "status": o.status,
                }
                for index, o in enumerate(outcomes)
            ],
        }
        return Response(LeadBulkOutputSerializer(body).data)
