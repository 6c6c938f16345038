"""The interventions API: list and read interventions, record outcomes, work escalations."""

from __future__ import annotations

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from churnapp.api.common import UtcDateTimeFilter
from churnapp.models import Lead
from interventions.api.serializers import (
    EscalationNoteIn,
    EscalationOut,
    InterventionDetailOut,
    InterventionOut,
    OutcomeIn,
)
from interventions.models import Escalation, Intervention
from interventions.selectors import escalation_queue, interventions_for_tenant
from interventions.services.escalations import escalation_acknowledge, escalation_resolve
from interventions.services.orchestration import intervention_resolve


class InterventionFilter(django_filters.FilterSet):
    planned_after = UtcDateTimeFilter(field_name="planned_at", lookup_expr="gte")
    planned_before = UtcDateTimeFilter(field_name="planned_at", lookup_expr="lt")
    variant = django_filters.CharFilter(field_name="variant__key")

    class Meta:
        model = Intervention
        fields = ["status", "stage", "outcome", "is_holdout", "lead", "episode"]


def _agent_of(request):
    user = getattr(request, "user", None)
    return getattr(user, "agent", None) if user is not None and user.is_authenticated else None


class InterventionListApi(ListAPIView):
    serializer_class = InterventionOut
    filterset_class = InterventionFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no tenant
            return Intervention.objects.none()
        return interventions_for_tenant(tenant=self.request.tenant)


class InterventionDetailApi(RetrieveAPIView):
    serializer_class = InterventionDetailOut

    def get_queryset(self):
        return interventions_for_tenant(tenant=self.request.tenant).prefetch_related(
            "steps__message"
        )


class LeadInterventionsApi(ListAPIView):
    serializer_class = InterventionOut
    filterset_class = InterventionFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Intervention.objects.none()
        lead = get_object_or_404(Lead, pk=self.kwargs["lead_id"], tenant=self.request.tenant)
        return interventions_for_tenant(tenant=self.request.tenant).filter(lead=lead)


class InterventionOutcomeApi(APIView):
    @extend_schema(
        request=OutcomeIn,
        responses=InterventionOut,
        description="Record an outcome the CRM knows (for example a conversion). "
        "Success is re_engaged or converted. A resolved intervention is returned unchanged.",
    )
    def post(self, request, pk: int):
        intervention = get_object_or_404(Intervention, pk=pk, tenant=request.tenant)
        data = OutcomeIn(data=request.data)
        data.is_valid(raise_exception=True)
        intervention = intervention_resolve(intervention=intervention, **data.validated_data)
        return Response(InterventionOut(intervention).data)


class EscalationFilter(django_filters.FilterSet):
    class Meta:
        model = Escalation
        fields = ["status", "manager"]


class EscalationListApi(ListAPIView):
    serializer_class = EscalationOut
    filterset_class = EscalationFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Escalation.objects.none()
        if self.request.query_params.get("status"):
            return (
                Escalation.objects.filter(tenant=self.request.tenant)
                .select_related("lead", "manager")
                .order_by("sla_due_at", "id")
            )
        return escalation_queue(tenant=self.request.tenant)


class EscalationAcknowledgeApi(APIView):
    @extend_schema(request=EscalationNoteIn, responses=EscalationOut)
    def post(self, request, pk: int):
        escalation = get_object_or_404(Escalation, pk=pk, tenant=request.tenant)
        data = EscalationNoteIn(data=request.data)
        data.is_valid(raise_exception=True)
        escalation = escalation_acknowledge(
            escalation=escalation, by=_agent_of(request), note=data.validated_data["note"]
        )
        return Response(EscalationOut(escalation).data)


class EscalationResolveApi(APIView):
    @extend_schema(request=EscalationNoteIn, responses=EscalationOut)
    def post(self, request, pk: int):
        escalation = get_object_or_404(Escalation, pk=pk, tenant=request.tenant)
        data = EscalationNoteIn(data=request.data)
        data.is_valid(raise_exception=True)
        escalation = escalation_resolve(
            escalation=escalation, by=_agent_of(request), note=data.validated_data["note"]
        )
        return Response(EscalationOut(escalation).data)
