"""Serializers of the interventions API (output shapes and inputs)."""

from rest_framework import serializers

from interventions.models import Escalation, Intervention, InterventionStep, Outcome


class StepOut(serializers.ModelSerializer):
    message_id = serializers.IntegerField(allow_null=True)
    message_status = serializers.CharField(source="message.status", default=None, allow_null=True)

    class Meta:
        model = InterventionStep
        fields = [
            "position",
            "channel",
            "recipient",
            "status",
            "skip_reason",
            "not_before",
            "message_id",
            "message_status",
        ]


class InterventionOut(serializers.ModelSerializer):
    lead_external_id = serializers.CharField(source="lead.external_id")
    variant = serializers.CharField(source="variant.key", default=None, allow_null=True)

    class Meta:
        model = Intervention
        fields = [
            "id",
            "lead_id",
            "lead_external_id",
            "episode",
            "stage",
            "status",
            "outcome",
            "outcome_reason",
            "is_holdout",
            "variant",
            "tier_at_start",
            "score_at_start",
            "detected_at",
            "planned_at",
            "activated_at",
            "engaged_at",
            "resolved_at",
            "window_ends_at",
            "previous_id",
        ]


class InterventionDetailOut(InterventionOut):
    steps = StepOut(many=True)

    class Meta(InterventionOut.Meta):
        fields = [*InterventionOut.Meta.fields, "steps"]


class OutcomeIn(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=Outcome.choices)
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class EscalationOut(serializers.ModelSerializer):
    lead_external_id = serializers.CharField(source="lead.external_id")
    manager = serializers.CharField(source="manager.name", default=None, allow_null=True)
    sla_breached = serializers.SerializerMethodField()

    class Meta:
        model = Escalation
        fields = [
            "id",
            "intervention_id",
            "lead_id",
            "lead_external_id",
            "manager_id",
            "manager",
            "status",
            "opened_at",
            "sla_due_at",
            "acknowledged_at",
            "resolved_at",
            "breached_at",
            "sla_breached",
            "notes",
        ]

    def get_sla_breached(self, obj: Escalation) -> bool:
        return obj.breached_at is not None


class EscalationNoteIn(serializers.Serializer):
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
