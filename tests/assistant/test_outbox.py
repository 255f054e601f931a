"""The SQLite outbox: order, acknowledgement, expiry, reports, durability, locking, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from assistant.errors import ConfigError, HubvoiceError
from assistant.outbox import Outbox, OutboxMessage, StoredMessage


class Clock:
    """A settable wall clock (the outbox takes its clock as a parameter)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def msg(n: int, max_age_s: float | None = 30.0, **kwargs: object) -> OutboxMessage:
    return OutboxMessage(f"t/{n}", f"payload {n}".encode(), max_age_s=max_age_s, ref=f"event-{n}",
                         intent="count", **kwargs)  # type: ignore[arg-type]


def test_due_in_order_and_ack_removes(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        seqs = outbox.put([msg(1), msg(2)]) + outbox.put([msg(3, qos=2, retain=True)])
        assert seqs == sorted(seqs)
        due = outbox.due()
        assert [(m.topic, m.payload, m.ref) for m in due] == [(f"t/{n}", f"payload {n}".encode(), f"event-{n}")
                                                             for n in (1, 2, 3)]
        assert (due[2].qos, due[2].retain, due[0].qos, due[0].retain) == (2, True, 1, False)
        assert [m.seq for m in outbox.due(after_seq=seqs[0], limit=1)] == [seqs[1]]
        assert outbox.ack(seqs[1]) == 1
        assert outbox.ack(seqs[1], 12345) == 0
        assert [m.seq for m in outbox.due()] == [seqs[0], seqs[2]]
        assert outbox.counts() == {"pending": 2, "expired": 0, "rejected": 0}


def test_messages_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "o.sqlite3"
    with Outbox(path) as outbox:
        outbox.put([msg(1), msg(2)])
    with Outbox(path) as outbox:
        assert [m.topic for m in outbox.due()] == ["t/1", "t/2"]
    assert path.read_bytes()[18:20] == b"\x02\x02"  # the SQLite header says WAL mode


def test_stale_messages_are_expired_not_deleted_and_reported_once(tmp_path: Path) -> None:
    clock = Clock()
    with Outbox(tmp_path / "o.sqlite3", clock=clock) as outbox:
        outbox.put([msg(1, max_age_s=5.0), msg(2, max_age_s=None)])
        clock.now += 3
        outbox.put([msg(3, max_age_s=5.0)])
        clock.now += 2.5  # 1 is 5.5 s old, 3 is 2.5 s old, 2 never expires
        assert [m.topic for m in outbox.due()] == ["t/2", "t/3"]
        (expired,) = outbox.messages("expired")
        assert (expired.topic, expired.state, expired.age(clock.now + 100)) == ("t/1", "expired", 5.5)
        reports: list[list[StoredMessage]] = []

        def report(items: list[StoredMessage]) -> OutboxMessage:
            reports.append(items)
            return OutboxMessage("report", b",".join(m.ref.encode() for m in items))

        assert [m.topic for m in outbox.report_expired(report)] == ["t/1"]
        assert outbox.report_expired(report) == []  # once
        assert [m.payload for m in outbox.due() if m.topic == "report"] == [b"event-1"]
        assert len(outbox.messages("expired")) == 1  # kept
        clock.now += 8 * 24 * 3600
        assert outbox.purge(7 * 24 * 3600) == 1  # reported and old: may go


def test_expiry_skips_messages_already_handed_out(tmp_path: Path) -> None:
    clock = Clock()
    with Outbox(tmp_path / "o.sqlite3", clock=clock) as outbox:
        first, second = outbox.put([msg(1, max_age_s=1.0), msg(2, max_age_s=1.0)])
        clock.now += 2
        assert outbox.due(after_seq=first, limit=0) == []  # only after the cursor
        assert [m.seq for m in outbox.messages("pending")] == [first]
        assert [m.seq for m in outbox.messages("expired")] == [second]


def test_rejected_messages_are_kept(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        (seq,) = outbox.put([msg(1)])
        assert outbox.reject(seq)
        assert outbox.due() == [] and [m.state for m in outbox.messages("rejected")] == ["rejected"]
        with pytest.raises(ValueError, match="pending, expired, rejected"):
            outbox.messages("lost")


def test_the_same_outbox_cannot_be_opened_twice(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as outbox:
        outbox.put([msg(1)])
        with pytest.raises(ConfigError, match="in use by another process"):
            Outbox(path)
    with Outbox(path) as outbox:  # free again once closed
        assert outbox.pending_count() == 1


def test_a_file_that_is_not_an_outbox_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"my shopping list, not a database\n" * 10)
    with pytest.raises(ConfigError, match="not a hubvoice outbox"):
        Outbox(path)
    assert path.read_bytes() == b"my shopping list, not a database\n" * 10


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(ConfigError, match="schema version 99"):
        Outbox(path)


def test_a_failed_write_is_a_clear_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    outbox.close()
    with pytest.raises(HubvoiceError, match="o.sqlite3: cannot store 1 message"):
        outbox.put([msg(1)])


def test_bad_messages_are_refused() -> None:
    with pytest.raises(ValueError, match="qos"):
        OutboxMessage("t", b"", qos=3)
    with pytest.raises(ValueError, match="max_age_s"):
        OutboxMessage("t", b"", max_age_s=0)


def test_threads_putting_and_acking_concurrently(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        errors: list[BaseException] = []

        def producer(k: int) -> None:
            try:
                for n in range(50):
                    outbox.put([msg(k * 1000 + n)])
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        def consumer() -> None:
            try:
                acked = 0
                while acked < 100:
                    for m in outbox.due(limit=min(10, 100 - acked)):
                        acked += outbox.ack(m.seq)
            except BaseException as err:  # pragma: no cover
                errors.append(err)

        threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)] + [threading.Thread(target=consumer)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors
        assert outbox.pending_count() == 100
        per_producer = {k: [int(m.topic[2:]) for m in outbox.due(limit=1000) if int(m.topic[2:]) // 1000 == k]
                        for k in range(4)}
        assert all(values == sorted(values) for values in per_producer.values())
