from django.apps import AppConfig


class ChurnappConfig(AppConfig):
    name = "churnapp"
    verbose_name = "Churn: tenants, leads and risk"
