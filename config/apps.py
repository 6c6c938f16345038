"""The ops wiring as a Django app: metrics receivers connect when the apps are ready."""

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "config"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from config.metrics import connect_receivers

        connect_receivers()
