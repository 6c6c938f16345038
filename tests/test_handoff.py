"""config/handoff.py: one background thread per process runs handed-off calls in order."""

from __future__ import annotations

import logging
import multiprocessing
import threading

from config.handoff import handoff, handoff_flush


def test_calls_run_in_order_off_the_calling_thread():
    ran: list[tuple[int, str]] = []
    for i in range(50):
        handoff(lambda i=i: ran.append((i, threading.current_thread().name)))
    assert handoff_flush(5)
    assert [i for i, _ in ran] == list(range(50))
    assert {name for _, name in ran} == {"handoff"}


def test_a_failing_call_is_logged_and_the_next_one_still_runs(caplog):
    ran = []

    def boom():
        raise RuntimeError("broker down")

    with caplog.at_level(logging.ERROR, logger="config.handoff"):
        handoff(boom, name="enqueue")
        handoff(lambda: ran.append("after"))
        assert handoff_flush(5)
    assert ran == ["after"]
    assert "handed-off call enqueue failed" in caplog.text
    assert "broker down" in caplog.text


def _child(conn) -> None:
    ran = []
    handoff(lambda: ran.append(threading.current_thread().name))
    conn.send((handoff_flush(5), ran))


def test_a_forked_child_gets_its_own_thread():
    # the parent's thread exists before the fork; the child inherits the object, not it
    handoff(lambda: None)
    assert handoff_flush(5)
    parent, child = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=_child, args=(child,))
    process.start()
    try:
        assert parent.poll(20), "the child's handed-off call never ran"
        flushed, ran = parent.recv()
    finally:
        process.join(10)
    assert flushed and ran == ["handoff"]
