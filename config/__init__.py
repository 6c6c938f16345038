"""Project configuration: settings, the Celery app, ASGI routing and URLs."""

from .celery import app as celery_app

__all__ = ("celery_app",)
