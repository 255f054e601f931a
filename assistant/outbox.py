"""A durable outbox: MQTT messages are written to SQLite before they are published.

A message stays in the outbox (state ``pending``) until the broker acknowledges it
(PUBACK, see :meth:`Outbox.ack`), so commands recognized while the broker is unreachable, or
while the process restarts, are delivered in order later. Each message may carry a maximum
age: a pending message older than that is marked ``expired`` (kept, never sent, never
silently dropped) and handed out once by :meth:`Outbox.report_expired` so the caller can tell
someone. A message the broker refused (an MQTT 5 PUBACK with a failure reason) is marked
``rejected``.

The database uses WAL mode, ``synchronous=FULL`` (a message survives a power cut once
:meth:`Outbox.put` returns) and an exclusive lock, so a second process cannot open the same
file and deliver the same messages twice. All methods are thread-safe: paho's callbacks
call them from paho's network thread.

Ages use the wall clock (``time.time``) because they must survive a restart; a clock that
jumps forward expires messages early (the safe side), one that jumps back delays expiry.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.errors import ConfigError, HubvoiceError

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ref TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    intent TEXT,
    created REAL NOT NULL,
    max_age_s REAL,
    state TEXT NOT NULL DEFAULT 'pending',
    closed_at REAL,
    reported INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_state_seq ON outbox (state, seq)",
)

_COLUMNS = "seq, ref, topic, payload, qos, retain, intent, created, max_age_s, state, closed_at"

STATES = ("pending", "expired", "rejected")


@dataclass(frozen=True)
class OutboxMessage:
    """A message to store and publish."""

    topic: str
    """The MQTT topic."""
    payload: bytes
    """The payload bytes."""
    qos: int = 1
    """MQTT QoS: 0, 1 or 2."""
    retain: bool = False
    """Publish with the retain flag."""
    intent: str | None = None
    """The intent the message carries (for reports and logs)."""
    ref: str = ""
    """The IntentEvent id the message belongs to (for reports and logs)."""
    max_age_s: float | None = None
    """Give the message up if it is still pending after this many seconds; None: never."""

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos: expected 0, 1 or 2, got {self.qos!r}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ValueError(f"max_age_s: expected a positive number or None, got {self.max_age_s!r}")


@dataclass(frozen=True)
class StoredMessage:
    """A message as the outbox holds it."""

    seq: int
    """Position in the outbox; messages are delivered in this order."""
    ref: str
    """The IntentEvent id the message belongs to."""
    topic: str
    """The MQTT topic."""
    payload: bytes
    """The payload bytes."""
    qos: int
    """MQTT QoS."""
    retain: bool
    """The retain flag."""
    intent: str | None
    """The intent the message carries."""
    created: float
    """When it was stored (seconds since the epoch)."""
    max_age_s: float | None
    """Its age limit, or None."""
    state: str
    """``pending``, ``expired`` or ``rejected``."""
    closed_at: float | None
    """When it was expired or rejected."""

    def age(self, now: float) -> float:
        """Seconds between storing and ``now`` (or the moment it was expired/rejected)."""
        return (self.closed_at if self.closed_at is not None else now) - self.created


class Outbox:
    """The SQLite-backed queue of messages waiting for a PUBACK."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=1.0, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"outbox.path: cannot open {self.path}: {err}") from err
        try:
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"outbox.path: {self.path} has schema version {version}; this hubvoice understands "
                    f"up to {SCHEMA_VERSION} (upgrade hubvoice or point outbox.path at a new file)"
                )
            with self._transaction() as db:  # also takes the exclusive lock for this process's lifetime
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.OperationalError as err:
            self._db.close()
            if "locked" in str(err):
                raise ConfigError(
                    f"outbox.path: {self.path} is in use by another process (is another hubvoice running "
                    f"with the same outbox?)"
                ) from err
            raise ConfigError(f"outbox.path: cannot use {self.path}: {err}") from err
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise ConfigError(
                f"outbox.path: {self.path} is not a hubvoice outbox ({err}); move it away or choose another path"
            ) from err
        except ConfigError:
            self._db.close()
            raise
        counts = self.counts()
        if counts["pending"]:
            _LOGGER.info("Outbox %s holds %d pending message(s) from before", self.path, counts["pending"])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _row(row: tuple[Any, ...]) -> StoredMessage:
        seq, ref, topic, payload, qos, retain, intent, created, max_age_s, state, closed_at = row
        return StoredMessage(seq, ref, topic, bytes(payload), qos, bool(retain), intent, created, max_age_s,
                             state, closed_at)

    def put(self, messages: Sequence[OutboxMessage]) -> list[int]:
        """Store messages (all or none) and return their sequence numbers."""
        now = self._clock()
        seqs = []
        try:
            with self._transaction() as db:
                for m in messages:
                    cursor = db.execute(
                        "INSERT INTO outbox (ref, topic, payload, qos, retain, intent, created, max_age_s)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (m.ref, m.topic, m.payload, m.qos, int(m.retain), m.intent, now, m.max_age_s),
                    )
                    seqs.append(int(cursor.lastrowid or 0))
        except sqlite3.Error as err:  # disk full, read-only file system, ...
            raise HubvoiceError(f"outbox {self.path}: cannot store {len(messages)} message(s): {err}") from err
        return seqs

    def due(self, *, after_seq: int = 0, limit: int = 100) -> list[StoredMessage]:
        """Pending messages with ``seq > after_seq``, oldest first, after expiring the stale ones."""
        now = self._clock()
        with self._transaction() as db:
            expired = db.execute(
                "UPDATE outbox SET state = 'expired', closed_at = ? WHERE state = 'pending' AND seq > ?"
                " AND max_age_s IS NOT NULL AND ? - created > max_age_s",
                (now, after_seq, now),
            ).rowcount
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        if expired:
            _LOGGER.debug("Outbox: %d message(s) passed their maximum age", expired)
        return [self._row(row) for row in rows]

    def ack(self, *seqs: int) -> int:
        """The broker has these messages: remove them (one transaction). Returns how many were pending."""
        with self._transaction() as db:
            return sum(db.execute("DELETE FROM outbox WHERE seq = ? AND state = 'pending'", (seq,)).rowcount
                       for seq in seqs)

    def reject(self, seq: int) -> bool:
        """The broker refused the message: keep it, marked ``rejected``. False if it was not pending."""
        with self._lock:
            return self._db.execute(
                "UPDATE outbox SET state = 'rejected', closed_at = ? WHERE seq = ? AND state = 'pending'",
                (self._clock(), seq),
            ).rowcount > 0

    def report_expired(
        self, make_report: Callable[[list[StoredMessage]], OutboxMessage | None]
    ) -> list[StoredMessage]:
        """Hand out the expired messages not reported yet, once.

        ``make_report`` turns them into a message that is stored in the same transaction that
        marks them reported, so a report is never lost and never made twice.
        """
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = 'expired' AND reported = 0 ORDER BY seq"
            ).fetchall()
            if not rows:
                return []
            expired = [self._row(row) for row in rows]
            report = make_report(expired)
            if report is not None:
                db.execute(
                    "INSERT INTO outbox (ref, topic, payload, qos, retain, intent, created, max_age_s)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (report.ref, report.topic, report.payload, report.qos, int(report.retain), report.intent,
                     self._clock(), report.max_age_s),
                )
            db.executemany("UPDATE outbox SET reported = 1 WHERE seq = ?", [(m.seq,) for m in expired])
        return expired

    def messages(self, state: str = "pending") -> list[StoredMessage]:
        """Every message in ``state`` (one of STATES), oldest first."""
        if state not in STATES:
            raise ValueError(f"state: expected one of {', '.join(STATES)}, got {state!r}")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE state = ? ORDER BY seq", (state,)
            ).fetchall()
        return [self._row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Number of messages per state."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | dict(rows)

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])

    def purge(self, older_than_s: float) -> int:
        """Delete expired (and reported) or rejected messages closed more than ``older_than_s`` ago."""
        with self._lock:
            return self._db.execute(
                "DELETE FROM outbox WHERE ((state = 'expired' AND reported = 1) OR state = 'rejected')"
                " AND closed_at < ?",
                (self._clock() - older_than_s,),
            ).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
