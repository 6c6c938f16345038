"""Read-side indexes tracking's analytics need on the tables it reads: interventions by
resolution time and messages by creation time, per tenant (days not rolled up yet are
read live). Built concurrently, so no write lock on a large table."""

from django.db import migrations

INDEXES = {
    "trk_interv_tenant_resolved": "interventions_intervention (tenant_id, resolved_at)",
    "trk_message_tenant_created": "notifications_message (tenant_id, created_at)",
}


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("tracking", "0001_initial"),
        ("interventions", "0001_initial"),
        ("notifications", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {target}",
            reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
        )
        for name, target in INDEXES.items()
    ]
