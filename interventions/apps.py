from django.apps import AppConfig


class InterventionsConfig(AppConfig):
    name = "interventions"

    def ready(self) -> None:
        from churnapp import signals as churn_signals
        from interventions import receivers
        from notifications import signals as notification_signals

        churn_signals.risk_assessed.connect(receivers.on_risk_assessed, dispatch_uid="iv-risk")
        churn_signals.risk_assessed_many.connect(
            receivers.on_risk_assessed_many, dispatch_uid="iv-risk-many"
        )
        churn_signals.activity_ingested.connect(
            receivers.on_activity_ingested, dispatch_uid="iv-activity"
        )
        notification_signals.message_status_changed.connect(
            receivers.on_message_status_changed, dispatch_uid="iv-msg-status"
        )
        notification_signals.message_statuses_changed.connect(
            receivers.on_message_statuses_changed, dispatch_uid="iv-msg-statuses"
        )
        notification_signals.message_engaged.connect(
            receivers.on_message_engaged, dispatch_uid="iv-msg-engaged"
        )
        notification_signals.recipient_opted_out.connect(
            receivers.on_recipient_opted_out, dispatch_uid="iv-opt-out"
        )
