"""WebSocket routes of every app, gathered in one list for asgi.py."""

websocket_urlpatterns: list = []

from tracking.routing import websocket_urlpatterns as tracking_ws  # noqa: E402

websocket_urlpatterns += tracking_ws
