"""Dashboard routes, mounted at the site root."""

from django.contrib.auth import views as auth_views
from django.urls import path

from tracking.dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("login/", views.DashboardLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="dashboard:login"), name="logout"),
    path("leads/", views.leads, name="leads"),
    path("leads/<int:lead_id>/", views.lead_detail, name="lead-detail"),
    path("escalations/", views.escalations, name="escalations"),
    path(
        "escalations/<int:escalation_id>/row/",
        views.escalation_row,
        name="escalation-row",
    ),
    path("me/", views.agent_view, name="agent"),
    path("assets/plotly.min.js", views.plotly_js, name="plotly-js"),
]
