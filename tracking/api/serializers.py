"""Serializers of the tracking API: period input, events, analytics and impact shapes."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from tracking.models import TrackingEvent
from tracking.selectors import PERIODS, Period, period_resolve

MAX_PERIOD_DAYS = 3 * 366


class PeriodIn(serializers.Serializer):
    period = serializers.ChoiceField(choices=sorted(PERIODS), required=False)
    # "from" is a Python keyword: the field is renamed in to_internal_value.
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)

    def to_internal_value(self, data):
        data = {
            "period": data.get("period"),
            "date_from": data.get("from"),
            "date_to": data.get("to"),
        }
        try:
            return super().to_internal_value({k: v for k, v in data.items() if v})
        except serializers.ValidationError as error:
            names = {"date_from": "from", "date_to": "to"}
            detail = error.detail if isinstance(error.detail, dict) else {}
            raise serializers.ValidationError(
                {names.get(k, k): v for k, v in detail.items()} or error.detail
            ) from error

    def validate(self, attrs):
        today = timezone.now().date()
        if attrs.get("period") and (attrs.get("date_from") or attrs.get("date_to")):
            raise serializers.ValidationError("Give either period or from/to, not both.")
        if attrs.get("date_to") and not attrs.get("date_from"):
            raise serializers.ValidationError({"from": ["from is required with to."]})
        period: Period = period_resolve(
            period=attrs.get("period"),
            date_from=attrs.get("date_from"),
            date_to=attrs.get("date_to"),
            today=today,
        )
        if period.last_day < period.first_day:
            raise serializers.ValidationError({"to": ["to is before from."]})
        if period.first_day > today:
            raise serializers.ValidationError({"from": ["from is in the future."]})
        if period.days > MAX_PERIOD_DAYS:
            raise serializers.ValidationError(
                {"to": [f"A period spans at most {MAX_PERIOD_DAYS} days."]}
            )
        return {"period": period}


PERIOD_PARAMETERS_DOC = (
    "Period: `period=7d|30d|90d` (UTC days ending today, today included; default 30d) "
    "or `from=YYYY-MM-DD&to=YYYY-MM-DD` (inclusive UTC days; `to` defaults to today)."
)


class EventOut(serializers.ModelSerializer):
    class Meta:
        model = TrackingEvent
        fields = [
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
        ]


class EventsAfterIn(serializers.Serializer):
    after_id = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=500)


class EventPageOut(serializers.Serializer):
    results = EventOut(many=True)
    last_id = serializers.IntegerField(help_text="Pass as after_id to continue.")
    has_more = serializers.BooleanField()


# --- Analytics shapes (documentation of the selectors' dictionaries) --------------------


class RateOut(serializers.Serializer):
    n = serializers.IntegerField(help_text="Resolved interventions (cancelled excluded).")
    successes = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True, help_text="Wilson 95 % lower bound.")
    ci_high = serializers.FloatField(allow_null=True, help_text="Wilson 95 % upper bound.")


class SegmentRateOut(RateOut):
    holdout = RateOut(help_text="The control group's rate in the same segment.")


class StageRateOut(SegmentRateOut):
    stage = serializers.IntegerField()
    target = serializers.FloatField(allow_null=True, help_text="The policy's success target.")


class ChannelRateOut(SegmentRateOut):
    channel = serializers.CharField(
        allow_blank=True, help_text="The intervention's first channel ('' = none)."
    )


class VariantRateOut(RateOut):
    stage = serializers.IntegerField()
    variant = serializers.CharField(allow_blank=True)


class SegmentsOut(serializers.Serializer):
    source = serializers.ListField(child=serializers.DictField())
    price_band = serializers.ListField(child=serializers.DictField())
    pipeline_stage = serializers.ListField(child=serializers.DictField())
    tier_at_start = serializers.ListField(child=serializers.DictField())


class SuccessRatesOut(serializers.Serializer):
    overall = RateOut()
    holdout = RateOut()
    by_stage = StageRateOut(many=True)
    by_channel = ChannelRateOut(many=True)
    by_variant = VariantRateOut(many=True)
    by_segment = SegmentsOut()


class PeriodOut(serializers.Serializer):
    to = serializers.DateField()
    days = serializers.IntegerField()
    days_from_rollups = serializers.IntegerField(help_text="Days answered wholly from rollups.")
    days_from_raw = serializers.IntegerField(
        help_text="Days answered at least in part from the live tables (today, and any day "
        "the nightly rollup has not reached)."
    )
    live_since = serializers.DateTimeField(
        allow_null=True,
        help_text="Facts timed from this instant on are read from the live tables; before "
        "it, from rollups. The intraday refresh moves it forward every "
        "TRACKING_TODAY_ROLLUP_SECONDS. Null when the whole period is rolled up.",
    )


# "from" is a Python keyword, so it cannot be a class attribute: declared here instead.
PeriodOut._declared_fields = {"from": serializers.DateField(), **PeriodOut._declared_fields}


class StageCountOut(serializers.Serializer):
    stage = serializers.IntegerField()
    started = serializers.IntegerField()


class ChannelCountOut(serializers.Serializer):
    channel = serializers.CharField(allow_blank=True)
    started = serializers.IntegerField()


class StageChannelCountOut(StageCountOut):
    channel = serializers.CharField(allow_blank=True)


class VolumeOut(serializers.Serializer):
    started = serializers.IntegerField()
    started_treated = serializers.IntegerField()
    started_holdout = serializers.IntegerField()
    by_stage = StageCountOut(many=True)
    by_channel = ChannelCountOut(many=True)
    by_stage_and_channel = StageChannelCountOut(many=True)


class OutcomesOut(serializers.Serializer):
    re_engaged = serializers.IntegerField()
    converted = serializers.IntegerField()
    churned = serializers.IntegerField()
    no_response = serializers.IntegerField()
    unsubscribed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class FunnelOut(serializers.Serializer):
    channel = serializers.CharField()
    queued = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    opened_or_clicked = serializers.IntegerField()
    replied = serializers.IntegerField()
    failed = serializers.IntegerField()
    suppressed = serializers.IntegerField()
    delivered_rate = serializers.FloatField(allow_null=True)
    opened_or_clicked_rate = serializers.FloatField(allow_null=True)
    replied_rate = serializers.FloatField(allow_null=True)


class LatencyOut(serializers.Serializer):
    n = serializers.IntegerField()
    p50 = serializers.FloatField(allow_null=True)
    p90 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)


class LatenciesOut(serializers.Serializer):
    detection_to_first_send = LatencyOut()
    send_to_delivered = LatencyOut()
    start_to_resolution = LatencyOut()


class EscalationsOut(serializers.Serializer):
    opened = serializers.IntegerField()
    acknowledged = serializers.IntegerField()
    resolved = serializers.IntegerField()
    sla_breaches = serializers.IntegerField()
    time_to_acknowledge_seconds = LatencyOut()
    time_to_resolve_seconds = LatencyOut()


class NowOut(serializers.Serializer):
    active_interventions = serializers.IntegerField()
    awaiting_response = serializers.IntegerField()
    open_escalations = serializers.IntegerField()


class TargetsOut(serializers.Serializer):
    stage_success = serializers.DictField(child=serializers.FloatField(), required=False)
    churn_rate_before = serializers.FloatField()
    churn_rate_goal = serializers.FloatField()


class SuccessOut(serializers.Serializer):
    period = PeriodOut()
    definition = serializers.CharField()
    volume = VolumeOut()
    outcomes = OutcomesOut()
    success = SuccessRatesOut()
    funnel = FunnelOut(many=True)
    latency_seconds = LatenciesOut()
    escalations = EscalationsOut()
    now = NowOut()
    targets = TargetsOut()


class ArmOut(serializers.Serializer):
    episodes = serializers.IntegerField()
    churned = serializers.IntegerField()
    churn_rate = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)


class ArmsOut(serializers.Serializer):
    treated = ArmOut()
    holdout = ArmOut()


class IntervalOut(serializers.Serializer):
    estimate = serializers.FloatField()
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()


class MoneyIntervalOut(serializers.Serializer):
    estimate = serializers.DecimalField(max_digits=16, decimal_places=2, coerce_to_string=True)
    ci_low = serializers.DecimalField(max_digits=16, decimal_places=2, coerce_to_string=True)
    ci_high = serializers.DecimalField(max_digits=16, decimal_places=2, coerce_to_string=True)


class RoiOut(serializers.Serializer):
    estimate = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)


class AnnualOut(serializers.Serializer):
    days_measured = serializers.FloatField()
    incremental_saves = serializers.FloatField(allow_null=True)
    revenue_protected = serializers.CharField(allow_null=True)
    cost = serializers.CharField(allow_null=True)
    net = serializers.CharField(allow_null=True)
    roi = serializers.FloatField(allow_null=True)


class ImpactFiguresOut(serializers.Serializer):
    absolute_reduction = IntervalOut(help_text="Holdout churn - treated churn (Newcombe).")
    relative_reduction = IntervalOut(help_text="1 - risk ratio (log delta method).")
    incremental_saves = IntervalOut()
    revenue_protected = MoneyIntervalOut()
    cost_per_incremental_save = serializers.CharField(allow_null=True)
    roi = RoiOut()
    annual = AnnualOut()


class CostLineOut(serializers.Serializer):
    channel = serializers.CharField()
    provider = serializers.CharField(allow_blank=True)
    sent = serializers.IntegerField()
    cost = serializers.CharField()
    cost_reported_by_provider = serializers.IntegerField()
    cost_from_table = serializers.IntegerField()


class CostOut(serializers.Serializer):
    total = serializers.CharField()
    messages_sent = serializers.IntegerField()
    by_channel_and_provider = CostLineOut(many=True)
    interventions_treated = serializers.IntegerField()
    per_intervention = serializers.CharField(allow_null=True)


class ImpactPeriodOut(PeriodOut):
    effective_days = serializers.FloatField(help_text="Days the program ran in the period.")


class ImpactOut(serializers.Serializer):
    period = ImpactPeriodOut()
    definition = serializers.CharField()
    currency = serializers.CharField()
    saved_lead_value = serializers.CharField()
    arms = ArmsOut()
    minimum_per_arm = serializers.IntegerField()
    sufficient_data = serializers.BooleanField()
    message = serializers.CharField(required=False)
    impact = ImpactFiguresOut(allow_null=True)
    cost = CostOut()
    targets = TargetsOut()
    pre_deployment = serializers.DictField()
