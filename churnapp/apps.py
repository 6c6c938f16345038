from django.apps import AppConfig


class ChurnappConfig(AppConfig):
    name = "churnapp"
    verbose_name = "Churn: tenants, leads and risk"

    def ready(self) -> None:
        from churnapp import receivers
        from churnapp.signals import activity_ingested

        activity_ingested.connect(
            receivers.rescore_on_inbound, dispatch_uid="churnapp.rescore_on_inbound"
        )
