"""Public tracking routes: open pixel, click redirect, unsubscribe (signed tokens)."""

from django.urls import path

from notifications import views

app_name = "notifications_tracking"

urlpatterns = [
    path("o/<str:token>", views.open_pixel, name="open"),
    path("c/<str:token>", views.click_redirect, name="click"),
    path("u/<str:token>", views.unsubscribe, name="unsubscribe"),
]
