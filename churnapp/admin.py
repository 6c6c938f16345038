"""The managers' screens; each concern registers its models in its own module."""

from churnapp import admin_scoring  # noqa: F401
