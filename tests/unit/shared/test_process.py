"""`supervise` with real asyncio tasks: a task that dies ends the process's work (TaskDied, so
the process exits non-zero and supervisord restarts it), a stop gives the tasks their grace,
then cancels those still running; and `die_with_parent` where the kernel cannot help."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared import process
from shared.process import TaskDied, die_with_parent, supervise


async def test_a_task_that_raises_stops_the_others_and_is_named() -> None:
    stop = asyncio.Event()
    saw_stop: list[bool] = []

    async def broken() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("redis went away")

    async def worker() -> None:
        await stop.wait()  # an orderly task watches `stop`
        saw_stop.append(True)

    with pytest.raises(TaskDied, match=r"task broken died: ConnectionError\('redis went away'\)"):
        await supervise({"worker": worker(), "broken": broken()}, stop, grace_s=5)
    assert stop.is_set()
    assert saw_stop == [True]  # the healthy task finished by itself within the grace


async def test_a_task_that_returns_early_is_an_error_too() -> None:
    stop = asyncio.Event()

    async def quits() -> None:
        return None

    async def worker() -> None:
        await stop.wait()

    with pytest.raises(TaskDied, match="task quits ended unexpectedly") as info:
        await supervise({"quits": quits(), "worker": worker()}, stop, grace_s=5)
    assert info.value.__cause__ is None


async def test_a_cancelled_task_before_stop_ended_unexpectedly() -> None:
    stop = asyncio.Event()

    async def cancelled() -> None:
        raise asyncio.CancelledError

    async def worker() -> None:
        await stop.wait()

    with pytest.raises(TaskDied, match="task cancelled ended unexpectedly"):
        await supervise({"cancelled": cancelled(), "worker": worker()}, stop, grace_s=5)


async def test_stop_then_grace_then_cancel(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    events: list[str] = []

    async def obedient() -> None:
        await stop.wait()
        events.append("obedient finished")

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()  # ignores `stop`
        except asyncio.CancelledError:
            events.append("stubborn cancelled")
            raise

    async def on_stop() -> None:
        events.append("on_stop")

    asyncio.get_running_loop().call_soon(stop.set)
    with caplog.at_level(logging.WARNING, logger="shared.process"):
        await supervise(
            {"obedient": obedient(), "stubborn": stubborn()}, stop, grace_s=0.05, on_stop=on_stop
        )
    assert events == ["obedient finished", "stubborn cancelled", "on_stop"]
    assert "stop_deadline task stubborn cancelled after 0.1 s" in caplog.text
    assert "obedient" not in caplog.text


async def test_a_task_failing_while_stopping_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()

    async def flush_fails() -> None:
        await stop.wait()
        raise OSError("disk full while flushing the spool")

    asyncio.get_running_loop().call_soon(stop.set)
    with caplog.at_level(logging.ERROR, logger="shared.process"):
        await supervise({"spool": flush_fails()}, stop, grace_s=5)
    assert "task_failed spool: OSError('disk full while flushing the spool')" in caplog.text


async def test_the_caller_cancelled_cancels_every_task() -> None:
    stop = asyncio.Event()
    started = asyncio.Event()
    cancelled: list[str] = []

    async def worker(name: str) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    outer = asyncio.create_task(supervise({"a": worker("a"), "b": worker("b")}, stop, grace_s=5))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.sleep(0)  # the tasks run their cancellation
    assert sorted(cancelled) == ["a", "b"]


def test_die_with_parent_is_false_without_prctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "_PRCTL", None)
    assert die_with_parent() is False


def test_die_with_parent_refused_by_the_kernel() -> None:
    assert die_with_parent(999) is False  # no such signal: prctl fails, nothing is sent


def test_prctl_is_found_on_linux_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert process._load_prctl() is not None
    monkeypatch.setattr(process.sys, "platform", "darwin")
    assert process._load_prctl() is None


def test_prctl_missing_from_libc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(*args: object, **kwargs: object) -> object:
        raise OSError("no libc")

    monkeypatch.setattr(process.ctypes, "CDLL", no_libc)
    assert process._load_prctl() is None
