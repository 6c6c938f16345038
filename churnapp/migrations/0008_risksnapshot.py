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
#    finishes the job. Each range is a pkey range scan. Measured on 1,988,712 daily rows
#    (82,863 leads x 24 days, 1.8 GB with indexes) on the shared 2-core machine: 11-15 s
#    forward, 26 s back; 10M rows would be ~200 statements, about a minute, with no lock
#    beyond the moved rows' and no long transaction. The deleted rows leave dead tuples
#    for (auto)vacuum: the space is reused by tier changes, the file does not shrink
#    (VACUUM FULL or pg_repack would).
# Reverse: the snapshots go back as daily rows (reasons [] and previous tier '': the
# snapshot never kept them), BATCH rows at a time in key order, then the unique index
# is rebuilt.

import datetime as dt

import django.db.models.deletion
from django.db import migrations, models, transaction

BATCH = 50_000
ASSESSMENT = "churnapp_riskassessment"
SNAPSHOT = "churnapp_risksnapshot"


def _id_ranges(cursor):
    cursor.execute(f"SELECT min(id), max(id) FROM {ASSESSMENT}")
    low, high = cursor.fetchone()
    if low is None:
        return
    for start in range(low, high + 1, BATCH):
        yield start, start + BATCH


def daily_rows_to_snapshots(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        for start, end in _id_ranges(cursor):
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
    # In key order, BATCH rows at a time (a lead-id range would hold a year of rows per lead).
    connection = schema_editor.connection
    after: tuple = (0, dt.date.min)
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                f"SELECT lead_id, day FROM {SNAPSHOT} WHERE (lead_id, day) > (%s, %s)"
                " ORDER BY lead_id, day OFFSET %s LIMIT 1",
                [*after, BATCH - 1],
            )
            upto = cursor.fetchone()
            bound = "AND (lead_id, day) <= (%s, %s)" if upto else ""
            with transaction.atomic(using=connection.alias):
                cursor.execute(
                    f"""
                    WITH moved AS (
                        DELETE FROM {SNAPSHOT} WHERE (lead_id, day) > (%s, %s) {bound}
                        RETURNING lead_id, day, tenant_id, assessed_at, score, tier,
                                  model_version
                    )
                    INSERT INTO {ASSESSMENT} (tenant_id, lead_id, kind, assessed_at, day,
                        score, tier, previous_tier, model_version, reasons, run_id)
                    SELECT tenant_id, lead_id, 'daily', assessed_at, day, score, tier, '',
                           model_version, '[]'::jsonb, NULL
                    FROM moved
                    """,
                    [*after, *(upto or ())],
                )
            if upto is None:
                return
            after = upto


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
