"""Tracking: lifecycle log, analytics, business impact, live dashboard."""

from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from churnapp import signals as churn_signals
        from interventions import signals as intervention_signals
        from notifications import signals as notification_signals
        from notifications.models import Message
        from tracking import receivers

        intervention_signals.intervention_changed.connect(
            receivers.on_intervention_changed, dispatch_uid="trk-intervention"
        )
        intervention_signals.escalation_changed.connect(
            receivers.on_escalation_changed, dispatch_uid="trk-escalation"
        )
        notification_signals.message_status_changed.connect(
            receivers.on_message_status_changed, dispatch_uid="trk-msg-status"
        )
        notification_signals.message_statuses_changed.connect(
            receivers.on_message_statuses_changed, dispatch_uid="trk-msg-statuses"
        )
        notification_signals.message_engaged.connect(
            receivers.on_message_engaged, dispatch_uid="trk-msg-engaged"
        )
        notification_signals.recipient_opted_out.connect(
            receivers.on_recipient_opted_out, dispatch_uid="trk-opt-out"
        )
        churn_signals.risk_assessed.connect(receivers.on_risk_assessed, dispatch_uid="trk-risk")
        churn_signals.risk_assessed_many.connect(
            receivers.on_risk_assessed_many, dispatch_uid="trk-risk-many"
        )
        # Creation of an outbox row has no signal of its own in notifications: the
        # framework's post_save of Message says "queued".
        post_save.connect(
            receivers.on_message_saved, sender=Message, dispatch_uid="trk-msg-created"
        )
