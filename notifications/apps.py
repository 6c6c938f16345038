"""Notifications: seven channels, templates, the outbox, providers, suppression."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from anymail.signals import tracking

        from notifications.receivers import anymail_tracking_received

        tracking.connect(anymail_tracking_received, dispatch_uid="notifications.anymail_tracking")
