"""backend_for: the tenant's active ChannelConfig, read afresh for every send."""

from __future__ import annotations

import pytest

from notifications.backends import backend_for
from notifications.backends.base import ConfigurationError
from notifications.backends.locmem import LocmemBackend
from notifications.backends.twilio import TwilioSmsBackend
from notifications.models import ChannelConfig

pytestmark = pytest.mark.django_db

TWILIO = "notifications.backends.twilio.TwilioSmsBackend"


def test_the_tenants_config_picks_the_backend_and_its_options(tenant, other_tenant):
    ChannelConfig.objects.create(
        tenant=tenant, channel="sms", backend=TWILIO, options={"from_number": "+15125550100"}
    )
    backend = backend_for(tenant=tenant, channel="sms")
    assert isinstance(backend, TwilioSmsBackend) and backend.tenant == tenant
    assert backend.options == {"from_number": "+15125550100"}
    # another tenant's config is not this one's (the settings default applies)
    other = backend_for(tenant=other_tenant, channel="sms")
    assert isinstance(other, LocmemBackend) and other.options == {}


def test_a_managers_change_applies_to_the_next_send(tenant):
    # given a backend already chosen once in this process
    config = ChannelConfig.objects.create(
        tenant=tenant, channel="sms", backend=TWILIO, options={"from_number": "+15125550100"}
    )
    backend_for(tenant=tenant, channel="sms")
    # when the options change behind the ORM's signals (another process, an UPDATE)
    ChannelConfig.objects.filter(pk=config.pk).update(options={"from_number": "+15125550199"})
    # then the next send sees them
    assert backend_for(tenant=tenant, channel="sms").options == {"from_number": "+15125550199"}
    # an empty backend keeps the options but takes the settings' backend
    ChannelConfig.objects.filter(pk=config.pk).update(backend="")
    chosen = backend_for(tenant=tenant, channel="sms")
    assert isinstance(chosen, LocmemBackend) and chosen.options["from_number"] == "+15125550199"
    # a deactivated config no longer applies at all
    ChannelConfig.objects.filter(pk=config.pk).update(backend=TWILIO, is_active=False)
    chosen = backend_for(tenant=tenant, channel="sms")
    assert isinstance(chosen, LocmemBackend) and chosen.options == {}


def test_a_backend_that_cannot_be_imported_is_a_configuration_error(tenant, settings):
    ChannelConfig.objects.create(tenant=tenant, channel="sms", backend="nowhere.Backend")
    with pytest.raises(ConfigurationError, match="cannot be imported"):
        backend_for(tenant=tenant, channel="sms")
    settings.NOTIFICATION_BACKENDS = {}
    with pytest.raises(ConfigurationError, match="no backend configured"):
        backend_for(tenant=tenant, channel="email")
