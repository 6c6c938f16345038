"""The tracking API: event resync, intervention timelines, analytics, impact and CSV exports."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from churnapp.exceptions import NotFoundError
from interventions.models import Intervention
from tracking.api.serializers import (
    PERIOD_PARAMETERS_DOC,
    EventOut,
    EventPageOut,
    EventsAfterIn,
    ImpactOut,
    PeriodIn,
    SuccessOut,
)
from tracking.exports import DATASETS, dataset_response
from tracking.selectors import (
    CHURN_DEFINITION,
    SUCCESS_DEFINITION,
    analytics_impact,
    analytics_success,
    intervention_timeline,
    tracking_events_after,
)

PERIOD_PARAMETERS = [
    OpenApiParameter("period", str, enum=["7d", "30d", "90d"], description=PERIOD_PARAMETERS_DOC),
    OpenApiParameter("from", OpenApiTypes.DATE, description="First UTC day (inclusive)."),
    OpenApiParameter("to", OpenApiTypes.DATE, description="Last UTC day (inclusive)."),
]


def _period(request):
    data = PeriodIn(data=request.query_params)
    data.is_valid(raise_exception=True)
    return data.validated_data["period"]


class TrackingEventsApi(APIView):
    @extend_schema(
        parameters=[EventsAfterIn],
        responses=EventPageOut,
        description="The tenant's lifecycle events after a cursor, oldest first: how a "
        "dashboard that missed broadcasts catches up. The id is monotonic.",
    )
    def get(self, request):
        data = EventsAfterIn(data=request.query_params)
        data.is_valid(raise_exception=True)
        limit = data.validated_data["limit"]
        events = list(
            tracking_events_after(
                tenant=request.tenant, after_id=data.validated_data["after_id"], limit=limit + 1
            )
        )
        page = events[:limit]
        return Response(
            {
                "results": EventOut(page, many=True).data,
                "last_id": page[-1].id if page else data.validated_data["after_id"],
                "has_more": len(events) > limit,
            }
        )


class InterventionTimelineApi(APIView):
    @extend_schema(
        responses=EventOut(many=True),
        description="Every lifecycle event of one intervention (its messages and "
        "escalation included), oldest first. Raw events older than the tenant's "
        "retention are purged.",
    )
    def get(self, request, pk: int):
        intervention = get_object_or_404(Intervention, pk=pk, tenant=request.tenant)
        return Response(EventOut(intervention_timeline(intervention=intervention), many=True).data)


SUCCESS_EXAMPLE = {
    "period": {"from": "2026-10-27", "to": "2026-11-25", "days": 30},
    "success": {
        "overall": {"n": 100, "successes": 45, "rate": 0.45, "ci_low": 0.3562, "ci_high": 0.5476}
    },
}
IMPACT_EXAMPLE = {
    "arms": {
        "treated": {"episodes": 400, "churned": 80, "churn_rate": 0.2},
        "holdout": {"episodes": 100, "churned": 35, "churn_rate": 0.35},
    },
    "sufficient_data": True,
    "impact": {
        "absolute_reduction": {"estimate": 0.15, "ci_low": 0.0538, "ci_high": 0.2522},
        "incremental_saves": {"estimate": 60.0, "ci_low": 21.52, "ci_high": 100.88},
    },
}


class AnalyticsSuccessApi(APIView):
    @extend_schema(
        parameters=PERIOD_PARAMETERS,
        responses=SuccessOut,
        description=SUCCESS_DEFINITION
        + " Volume counts interventions started in the period; rates carry Wilson 95 % "
        "intervals; latencies are percentiles from histograms (linear within a bucket). "
        "Whole days come from the daily rollups, days not rolled up yet (today) from the "
        "live tables. Targets are shown beside the measured values, never used in them.",
        examples=[OpenApiExample("30 days", value=SUCCESS_EXAMPLE, response_only=True)],
    )
    def get(self, request):
        return Response(analytics_success(tenant=request.tenant, period=_period(request)))


class AnalyticsImpactApi(APIView):
    @extend_schema(
        parameters=PERIOD_PARAMETERS,
        responses=ImpactOut,
        description=CHURN_DEFINITION
        + " Absolute reduction = holdout churn - treated churn with Newcombe's hybrid "
        "score 95 % interval; relative reduction = 1 - risk ratio with a log delta-method "
        "interval; incremental saves = absolute reduction x treated episodes; revenue "
        "protected = saves x the tenant's saved lead value; cost from the messages sent "
        "(provider-reported cost, else TRACKING_MESSAGE_COSTS); ROI = (revenue - cost) / "
        "cost. Annual figures scale the flows by 365.25 / days the program ran in the "
        "period. With fewer than TRACKING_MIN_ARM_SIZE ended episodes in either arm, "
        "`impact` is null and `message` says why.",
        examples=[OpenApiExample("Enough data", value=IMPACT_EXAMPLE, response_only=True)],
    )
    def get(self, request):
        return Response(analytics_impact(tenant=request.tenant, period=_period(request)))


class ExportApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="First UTC day."),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last UTC day."),
            OpenApiParameter(
                "dataset", str, OpenApiParameter.PATH, enum=sorted(DATASETS), description="Table."
            ),
        ],
        responses={(200, "text/csv"): OpenApiTypes.STR},
        description="Stream one table of the tenant as CSV (interventions, messages, "
        "lifecycle events or the daily rollups), optionally limited to from/to UTC days "
        "(by start, creation, occurrence or rollup day). Streamed in chunks: any size.",
    )
    def get(self, request, dataset: str):
        if dataset not in DATASETS:
            raise NotFoundError(f"No dataset {dataset!r}.", details={"datasets": sorted(DATASETS)})
        first = last = None
        if request.query_params.get("from") or request.query_params.get("to"):
            period = _period(request)
            first, last = period.first_day, period.last_day
        return dataset_response(
            name=dataset, tenant_id=request.tenant.id, first_day=first, last_day=last
        )
