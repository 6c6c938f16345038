# Daily snapshots move out of RiskAssessment into their own narrow table (issue 9: the
# first run of each UTC day wrote one wide row per lead, reasons included, into a table
# with five indexes and three foreign-key checks per row; a snapshot now is one narrow
# row and one entry in its (lead_id, day) key, see RiskSnapshot).
#
# Not atomic, so a big table is moved in short transactions instead of one long one:
# 1. the partial unique index on (lead_id, day) WHERE kind = 'daily' is dropped first.
#    DROP INDEX waits for the transactions writing to the table, so every daily row
#    committed by the old code is visible to step 2; an old worker still running
#    afterwards fails its INSERT ... ON CONFLICT (no matching index), its chunk is
#    recorded as failed and is scored again by the new code: nothing is lost.
# 2. the daily rows are moved in id ranges of BATCH, each one statement (DELETE ...
#    RETURNING feeding INSERT ... ON CONFLICT DO NOTHING) in its own transaction: a
#    crash leaves every range either moved or not, and running the migration again
#    finishes the job. Each range is a pkey range scan; on 10M daily rows that is ~200
#    statements of a second or so each, no lock beyond the moved rows' and no long
#    transaction. The deleted rows leave dead tuples for autovacuum: the space is reused
#    by tier changes, the file does not shrink (VACUUM FULL or pg_repack would).
# Reverse: the snapshots go back as daily rows (reasons [] and previous tier '' : the
# snapshot never kept them) in lead_id ranges, then the unique index is rebuilt.

import django.db.models.deletion
from django.db import migrations, models, transaction

BATCH = 50_000
ASSESSMENT = "churnapp_riskassessment"
SNAPSHOT = "churnapp_risksnapshot"


def _ranges(cursor, table: str, column: str):
    cursor.execute(f"SELECT min({column}), max({column}) FROM {table}")
    low, high = cursor.fetchone()
    if low is None:
        return
    for start in range(low, high + 1, BATCH):
        yield start, start + BATCH


def daily_rows_to_snapshots(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for start, end in _ranges(cursor, ASSESSMENT, "id"):
            with transaction.atomic(using=connection.alias):
                cursor.execute(
                    f"""
                    WITH moved AS (
                        DELETE FROM {ASSESSMENT}
                        WHERE id >= %s AND id < %s AND kind = 'daily'
                        RETURNING lead_id, day, tenant_id, assessed_at, score, tier,
                                  model_version
                    )
                    INSERT INTO {SNAPSHOT} (lead_id, day, tenant_id, assessed_at, score,
                                            tier, model_version)
                    SELECT lead_id, day, tenant_id, assessed_at, score, tier, model_version
                    FROM moved
                    ON CONFLICT (lead_id, day) DO NOTHING
                    """,
                    [start, end],
                )


def snapshots_to_daily_rows(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for start, end in _ranges(cursor, SNAPSHOT, "lead_id"):
            with transaction.atomic(using=connection.alias):
                cursor.execute(
                    f"""
                    WITH moved AS (
                        DELETE FROM {SNAPSHOT} WHERE lead_id >= %s AND lead_id < %s
                        RETURNING lead_id, day, tenant_id, assessed_at, score, tier,
                                  model_version
                    )
                    INSERT INTO {ASSESSMENT} (tenant_id, lead_id, kind, assessed_at, day,
                        score, tier, previous_tier, model_version, reasons, run_id)
                    SELECT tenant_id, lead_id, 'daily', assessed_at, day, score, tier, '',
                           model_version, '[]'::jsonb, NULL
                    FROM moved
                    """,
                    [start, end],
                )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("churnapp", "0007_drop_redundant_lead_and_assessment_indexes"),
    ]

    operations = [
        # Columns in this order: the fixed-width ones first, widest first, so no padding.
        migrations.CreateModel(
            name="RiskSnapshot",
            fields=[
                (
                    "lead",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="risk_snapshots",
                        to="churnapp.lead",
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="churnapp.tenant",
                    ),
                ),
                ("assessed_at", models.DateTimeField()),
                ("score", models.FloatField()),
                ("day", models.DateField()),
                ("tier", models.CharField(max_length=16)),
                ("model_version", models.CharField(max_length=64)),
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "lead",
                        "day",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
            ],
        ),
        migrations.RemoveConstraint(
            model_name="riskassessment",
            name="riskassessment_one_daily_per_lead",
        ),
        migrations.RunPython(daily_rows_to_snapshots, snapshots_to_daily_rows),
    ]
