"""Activity endpoints: bulk ingest (deduplicated on source_event_id) and a filtered list."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from churnapp import selectors
from churnapp.api.common import (
    AwareDateTimeField,
    UtcDateTimeFilter,
    batch_items,
    error_responses,
    items_validate,
)
from churnapp.models import ActivityKind, Direction, LeadActivity
from churnapp.services.activities import MAX_BATCH, ActivityInput, activities_ingest


class ActivityInputSerializer(serializers.Serializer):
    lead_external_id = serializers.CharField(max_length=128)
    kind = serializers.ChoiceField(choices=ActivityKind.choices)
    occurred_at = AwareDateTimeField()
    source_event_id = serializers.CharField(
        max_length=200, help_text="The CRM's id of this event; a repeat is a duplicate."
    )
    direction = serializers.ChoiceField(choices=Direction.choices, required=False)
    channel = serializers.CharField(max_length=16, required=False)
    value = serializers.FloatField(allow_null=True, required=False)
    payload = serializers.DictField(required=False)


class ActivityOutputSerializer(serializers.ModelSerializer):
    lead_id = serializers.IntegerField(read_only=True)
    lead_external_id = serializers.CharField(source="lead.external_id", read_only=True)

    class Meta:
        model = LeadActivity
        fields = [
            "id",
            "lead_id",
            "lead_external_id",
            "kind",
            "direction",
            "channel",
            "occurred_at",
            "source_event_id",
            "value",
            "payload",
            "created_at",
        ]
        read_only_fields = fields


class ActivityItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    source_event_id = serializers.CharField()
    status = serializers.CharField(help_text="created or duplicate")


class ActivityBulkOutputSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    items = ActivityItemResultSerializer(many=True)


class ActivityBulkIngestView(APIView):
    """Store up to 1,000 activities, all or nothing. Resending a batch is safe: events
    already stored come back as duplicates. 201 when something new was stored, else 200."""

    @extend_schema(
        tags=["activities"],
        request=inline_serializer(
            "ActivityBulkIngestRequest", {"items": ActivityInputSerializer(many=True)}
        ),
        responses={
            200: ActivityBulkOutputSerializer,
            201: ActivityBulkOutputSerializer,
            **error_responses(400, 401),
        },
    )
    def post(self, request):
        items = batch_items(request.data, max_items=MAX_BATCH)
        validated = items_validate(ActivityInputSerializer, items, "activities")
        result = activities_ingest(
            tenant=request.tenant, items=[ActivityInput(**item) for item in validated]
        )
        body = {
            "created": result.created,
            "duplicates": result.duplicates,
            "items": [
                {"index": i, "source_event_id": item["source_event_id"], "status": s}
                for i, (item, s) in enumerate(zip(validated, result.statuses, strict=True))
            ],
        }
        return Response(
            ActivityBulkOutputSerializer(body).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class ActivityFilter(django_filters.FilterSet):
    lead = django_filters.NumberFilter(field_name="lead_id")
    lead_external_id = django_filters.CharFilter(field_name="lead__external_id")
    kind = django_filters.ChoiceFilter(choices=ActivityKind.choices)
    occurred_since = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = LeadActivity
        fields: list[str] = []


@extend_schema(tags=["activities"])
class ActivityListView(generics.ListAPIView):
    """The tenant's activities, newest first; filter by lead id or external id."""

    serializer_class = ActivityOutputSerializer
    filterset_class = ActivityFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no tenant
            return LeadActivity.objects.none()
        return selectors.activity_list(tenant=self.request.tenant)
