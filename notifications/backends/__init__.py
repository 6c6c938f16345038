"""Provider backends, one module per provider, chosen per tenant and channel by settings."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from notifications.backends.base import BaseBackend, ConfigurationError


def backend_for(*, tenant, channel: str) -> BaseBackend:
    """The tenant's ChannelConfig backend if set, else settings.NOTIFICATION_BACKENDS."""
    from notifications.models import ChannelConfig

    config = ChannelConfig.objects.filter(tenant=tenant, channel=channel, is_active=True).first()
    path = (config.backend if config else "") or settings.NOTIFICATION_BACKENDS.get(channel, "")
    if not path:
        raise ConfigurationError(f"no backend configured for channel {channel!r}")
    try:
        backend_class = import_string(path)
    except ImportError as exc:
        raise ConfigurationError(f"backend {path!r} cannot be imported: {exc}") from exc
    return backend_class(tenant=tenant, options=dict(config.options) if config else {})
