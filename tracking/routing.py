"""WebSocket routes of tracking."""

from django.urls import path

from tracking.consumers import TrackingConsumer

websocket_urlpatterns = [path("ws/tracking/", TrackingConsumer.as_asgi())]
