"""With DATABASE_REPLICA_URL set: analytics reads go to the read replica, everything else to the primary."""

from __future__ import annotations

from django.conf import settings

# Apps whose reads are reports over past data: a replica's second of lag is harmless.
ANALYTICS_APP_LABELS = frozenset({"tracking"})


def analytics_db() -> str:
    """The alias for an explicit `.using()` on a heavy report query."""
    return "replica" if "replica" in settings.DATABASES else "default"


class AnalyticsReplicaRouter:
    def db_for_read(self, model, **hints) -> str | None:
        if model._meta.app_label in ANALYTICS_APP_LABELS and "replica" in settings.DATABASES:
            return "replica"
        return None

    def db_for_write(self, model, **hints) -> str:
        return "default"

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        # Both aliases are the same database, one a copy of the other.
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints) -> bool:
        return db == "default"
