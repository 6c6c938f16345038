"""Risk API: a lead's score, tier, reasons and history; score now; leads by tier."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from churnapp.exceptions import ApplicationError, NotFoundError
from churnapp.models import Lead, RiskTier
from churnapp.risk_selectors import lead_risk_history, tenant_thresholds
from churnapp.services.scoring import leads_rescore


class ReasonSerializer(serializers.Serializer):
    factor = serializers.CharField()
    text = serializers.CharField()
    impact = serializers.FloatField(help_text="How much this factor adds to the probability.")


class AssessmentSerializer(serializers.Serializer):
    id = serializers.IntegerField(
        allow_null=True, help_text="The tier change's id; null for a daily snapshot."
    )
    kind = serializers.CharField(help_text="tier_change, or daily (the day's first score).")
    assessed_at = serializers.DateTimeField()
    score = serializers.FloatField()
    tier = serializers.CharField()
    previous_tier = serializers.CharField(
        allow_null=True, help_text="The tier before a tier change; null for a daily snapshot."
    )
    model_version = serializers.CharField()
    reasons = ReasonSerializer(
        many=True, help_text="A tier change's reasons; empty for a snapshot."
    )


class ThresholdsSerializer(serializers.Serializer):
    early_warning = serializers.FloatField()
    active_risk = serializers.FloatField()
    critical = serializers.FloatField()


class LeadRiskOutputSerializer(serializers.Serializer):
    lead_id = serializers.IntegerField(source="id")
    external_id = serializers.CharField()
    score = serializers.FloatField(source="risk_score", allow_null=True)
    tier = serializers.CharField(source="risk_tier")
    scored_at = serializers.DateTimeField(source="risk_scored_at", allow_null=True)
    model_version = serializers.CharField(source="risk_model_version")
    reasons = ReasonSerializer(source="risk_reasons", many=True)
    thresholds = ThresholdsSerializer()
    history = AssessmentSerializer(many=True)


def _lead_for(request, lead_id: int) -> Lead:
    lead = Lead.objects.filter(tenant=request.tenant, pk=lead_id).first()
    if lead is None:
        raise NotFoundError(f"No lead {lead_id} in this tenant.")
    return lead


def _risk_body(lead: Lead) -> dict:
    lead.thresholds = tenant_thresholds(tenant_id=lead.tenant_id)
    lead.history = list(lead_risk_history(lead=lead))
    return LeadRiskOutputSerializer(lead).data


class LeadRiskApi(APIView):
    @extend_schema(
        operation_id="lead_risk_retrieve",
        responses=LeadRiskOutputSerializer,
        summary="A lead's churn probability, tier, reasons, model version and history",
    )
    def get(self, request, lead_id: int):
        return Response(_risk_body(_lead_for(request, lead_id)))


class LeadScoreApi(APIView):
    @extend_schema(
        operation_id="lead_score_now",
        request=None,
        responses=LeadRiskOutputSerializer,
        summary="Rescore a lead now and return its risk",
    )
    def post(self, request, lead_id: int):
        lead = _lead_for(request, lead_id)
        if lead.status != "active" or lead.deleted_at is not None:
            raise ApplicationError(
                f"Lead {lead_id} is {lead.status}{' and deleted' if lead.deleted_at else ''}; "
                "only active leads are scored.",
                code="lead_not_active",
            )
        leads_rescore(tenant_id=request.tenant.id, lead_ids=[lead.id], as_of=timezone.now())
        lead.refresh_from_db()
        return Response(_risk_body(lead))


class RiskLeadOutputSerializer(serializers.Serializer):
    lead_id = serializers.IntegerField(source="id")
    external_id = serializers.CharField()
    score = serializers.FloatField(source="risk_score", allow_null=True)
    tier = serializers.CharField(source="risk_tier")
    scored_at = serializers.DateTimeField(source="risk_scored_at", allow_null=True)
    reasons = ReasonSerializer(source="risk_reasons", many=True)


class RiskLeadListApi(ListAPIView):
    serializer_class = RiskLeadOutputSerializer

    @extend_schema(
        operation_id="risk_leads_list",
        parameters=[
            OpenApiParameter(
                "tier",
                str,
                description="Comma-separated tiers: " + ", ".join(RiskTier.values),
            )
        ],
        summary="Active leads filtered by risk tier, riskiest first",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no tenant
            return Lead.objects.none()
        tiers = [t for t in self.request.query_params.get("tier", "").split(",") if t]
        unknown = [t for t in tiers if t not in RiskTier.values]
        if unknown:
            raise ApplicationError(
                f"unknown tier(s) {', '.join(unknown)}; expected {', '.join(RiskTier.values)}",
                code="validation_error",
            )
        qs = Lead.objects.filter(
            tenant=self.request.tenant, status="active", deleted_at__isnull=True
        )
        if tiers:
            qs = qs.filter(risk_tier__in=tiers)
        return qs.order_by("-risk_score", "id").only(
            "id", "external_id", "risk_score", "risk_tier", "risk_scored_at", "risk_reasons"
        )
