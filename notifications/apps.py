"""Notifications: seven channels, templates, the outbox, providers, suppression."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from anymail.signals import tracking

        from churnapp.signals import crm_message_received as crm_message_signal
        from notifications.receivers import anymail_tracking_received, crm_message_received

        tracking.connect(anymail_tracking_received, dispatch_uid="notifications.anymail_tracking")
        crm_message_signal.connect(crm_message_received, dispatch_uid="notifications.crm_message")
