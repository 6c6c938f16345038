"""Settings of the daphne that test_asgi_threads starts: the project's test settings,
a few extra views (site_urls) and an application_name that finds its connections."""

from config.settings.test import *  # noqa: F403

ROOT_URLCONF = "tests.web.site_urls"
DATABASES["default"].setdefault("OPTIONS", {})["application_name"] = "asgi-threads-test"  # noqa: F405
