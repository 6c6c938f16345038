"""Real-time rescore hints: sent by PostgreSQL NOTIFY with the activity, relayed to Celery
by one listener among the workers.

New inbound activity should rescore its lead within moments (the detection path); the
hourly run scores every lead anyway, so this is a hint, not a duty. It used to be a
Celery `delay` after commit in the web process: about 0.3 ms of kombu CPU per open pixel
or ingest request, which held the interpreter while the next request waited (measured:
0.9 ms of a 4.1 ms open at p50, docs/benchmarks/tracking-write.md).

Now the committing transaction only adds `pg_notify` to its own work (the activities'
insert statement itself, churnapp.services.activities):
- PostgreSQL delivers the notification when, and only when, the transaction commits
  (a rolled-back ingest hints nothing), and folds identical ones within a transaction;
- `HintRelay`, a thread in the Celery worker (config.celery's bootstep), LISTENs,
  gathers what has arrived per tenant and enqueues `rescore_leads` for it. Of several
  workers, the one holding a PostgreSQL advisory lock relays; the others stand by and
  one of them takes over within `STANDBY_RETRY` seconds when it goes away.

What this trades: a hint committed while no relay is listening (no worker, or during a
failover) is lost; the next hourly run scores the lead. The same was true of a broker
that was down.
"""

from __future__ import annotations

import logging
import select
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

from django.db import connection, connections

logger = logging.getLogger(__name__)

CHANNEL = "churn_rescore_hint"
# The advisory lock key of the one active relay (per database, as NOTIFY is).
RELAY_LOCK_KEY = 0x636875726E01  # "churn" + 1
# NOTIFY payloads must stay under 8000 bytes: lead ids go in batches of this many.
IDS_PER_NOTIFY = 500
STANDBY_RETRY = 2.0
# Lead ids per rescore_leads task when one drain brings many for a tenant.
IDS_PER_TASK = 1000


def hint_query(lead_ids: str) -> str:
    """A query that sends the hints for the lead ids that `lead_ids` selects (SQL of a
    relation with a column lead_id), IDS_PER_NOTIFY ids a notification; its one value
    is the number sent. Parameters: %(hint_channel)s, %(hint_tenant)s (hint_params).

    Activities' insert makes it part of its own statement (no round trip of its own)."""
    return f"""
        SELECT count(pg_notify(%(hint_channel)s, %(hint_tenant)s || ':' || ids)) FROM (
            SELECT string_agg(lead_id::text, ',' ORDER BY lead_id) AS ids FROM (
                SELECT lead_id, (row_number() OVER (ORDER BY lead_id) - 1)
                                / {IDS_PER_NOTIFY} AS part
                  FROM (SELECT DISTINCT lead_id FROM ({lead_ids}) AS given) AS d
            ) AS numbered GROUP BY part
        ) AS payloads
    """


def hint_params(tenant_id: int) -> dict:
    return {"hint_channel": CHANNEL, "hint_tenant": str(int(tenant_id))}


def relay_holder_pid() -> int | None:
    """The database backend pid of the active relay's connection, None when no relay
    listens (hints are then lost until one does: health checks and tests ask)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT pid FROM pg_locks
             WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND classid = %s AND objid = %s AND objsubid = 1
            """,
            [RELAY_LOCK_KEY >> 32, RELAY_LOCK_KEY & 0xFFFFFFFF],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def parse(payloads: Iterable[str]) -> dict[int, set[int]]:
    """Notification payloads ("tenant:id,id,...") as lead ids per tenant; a payload that
    is not one of ours is logged and skipped."""
    wanted: dict[int, set[int]] = defaultdict(set)
    for payload in payloads:
        try:
            tenant, _, ids = payload.partition(":")
            lead_ids = {int(i) for i in ids.split(",") if i}
            wanted[int(tenant)] |= lead_ids
        except ValueError:
            logger.warning("rescore hint relay: ignoring payload %r", payload[:100])
    return wanted


def _enqueue_rescore(tenant_id: int, lead_ids: list[int]) -> None:
    from churnapp.tasks import rescore_leads

    rescore_leads.delay(tenant_id, lead_ids)


class HintRelay:
    """LISTEN for rescore hints and enqueue `rescore_leads` for them, on a thread.

    Only the holder of the advisory lock listens; `active` tells whether this one does.
    `enqueue(tenant_id, lead_ids)` is the Celery enqueue (tests may give another)."""

    def __init__(
        self,
        *,
        enqueue: Callable[[int, list[int]], object] = _enqueue_rescore,
        alias: str = "default",
        poll_seconds: float = 1.0,
    ) -> None:
        self.enqueue = enqueue
        self.alias = alias
        self.poll_seconds = poll_seconds
        self.active = threading.Event()
        self.relayed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rescore-hint-relay", daemon=True)
        self._db = None

    def start(self) -> HintRelay:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._connect_and_lock():
                    self._listen()
            except Exception:
                logger.exception("rescore hint relay: connection lost; reconnecting")
            finally:
                self._close()
            self._stop.wait(STANDBY_RETRY)

    def _connect_and_lock(self) -> bool:
        # A connection of its own, outside Django's per-thread handler: it lives as long
        # as the relay and holds the session-level advisory lock.
        self._db = connections.create_connection(self.alias)
        self._db.ensure_connection()
        self._db.set_autocommit(True)
        raw = self._db.connection
        with raw.cursor() as cursor:
            # LISTEN before the lock: once the lock shows this relay as the holder
            # (relay_holder_pid), every hint committed from then on reaches it.
            cursor.execute(f"LISTEN {CHANNEL}")
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [RELAY_LOCK_KEY])
            if not cursor.fetchone()[0]:
                cursor.execute("UNLISTEN *")
                return False  # another relay is active: stand by
        logger.info("rescore hint relay: active")
        return True

    def _listen(self) -> None:
        raw = self._db.connection
        self.active.set()
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([raw], [], [], self.poll_seconds)
                if not readable:
                    continue
                raw.poll()
                payloads = [n.payload for n in raw.notifies if n.channel == CHANNEL]
                raw.notifies.clear()
                self._relay(payloads)
        finally:
            self.active.clear()

    def _relay(self, payloads: list[str]) -> None:
        for tenant_id, ids in parse(payloads).items():
            ordered = sorted(ids)
            for k in range(0, len(ordered), IDS_PER_TASK):
                try:
                    self.enqueue(tenant_id, ordered[k : k + IDS_PER_TASK])
                    self.relayed += 1
                except Exception:
                    # The broker is down: the hint is lost, as it was with a failed
                    # delay; the hourly run scores these leads.
                    logger.exception("rescore hint relay: enqueue failed (tenant %s)", tenant_id)

    def _close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception:
                logger.debug("rescore hint relay: close failed", exc_info=True)
            self._db = None
