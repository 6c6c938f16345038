"""The notifications API: push subscriptions and provider callbacks."""

from django.urls import path

from notifications.api import views

app_name = "notifications"

urlpatterns = [
    path("push-subscriptions/", views.PushSubscriptionRegisterApi.as_view(), name="push-register"),
    path(
        "push-subscriptions/delete/",
        views.PushSubscriptionDeleteApi.as_view(),
        name="push-delete",
    ),
    path(
        "callbacks/twilio/<slug:tenant_slug>/status/",
        views.TwilioStatusCallbackApi.as_view(),
        name="twilio-status",
    ),
    path(
        "callbacks/twilio/<slug:tenant_slug>/inbound/",
        views.TwilioInboundSmsApi.as_view(),
        name="twilio-inbound",
    ),
    path(
        "callbacks/in-app/<slug:tenant_slug>/",
        views.InAppCallbackApi.as_view(),
        name="in-app-callback",
    ),
]
