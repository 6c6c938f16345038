"""Top-level URLs: admin, API (one include per app), schema and docs."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("churnapp.api.urls")),
    path("api/", include("interventions.api.urls")),
    path("api/notifications/", include("notifications.api.urls")),
    path("t/", include("notifications.urls")),
    path("anymail/", include("anymail.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

# JSON 404s in the API's error format under /api/ (see churnapp.api.errors).
handler404 = "churnapp.api.errors.not_found_view"

# Until the live dashboard exists, the site root leads to the admin. A dashboard route
# for "" placed above this one takes precedence.
urlpatterns += [path("", RedirectView.as_view(url="/admin/", permanent=False))]

# Operations: probes, Prometheus and the admin health page (ahead of the admin's catch-all).
from config.health import admin_health, healthz, readyz  # noqa: E402
from config.metrics import metrics_view  # noqa: E402

urlpatterns[:0] = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/ops/health/", admin.site.admin_view(admin_health), name="ops-health"),
]
