"""Local development: debug on, everything else from the environment."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SERVE_STATIC = env.bool("DJANGO_SERVE_STATIC", default=True)
