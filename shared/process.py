"""Process plumbing shared by collector, writer and watchdog: config or exit 2, logging, a stop
event set by SIGTERM/SIGINT, supervised background tasks (one dies -> the process exits
non-zero so that supervisord restarts it), and an end with the parent (a supervisord killed -9
leaves no orphan running)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, cast

from shared.config import ConfigError, Settings, load_settings, remember
from shared.logs import configure_logging

EXIT_CONFIG = 2
PR_SET_PDEATHSIG = 1  # linux/prctl.h
log = logging.getLogger(__name__)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return cast(Callable[..., int], libc.prctl)
    except (OSError, AttributeError):
        return None


# resolved once at import: a Popen preexec_fn then only calls it (no library load after fork)
_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Have the kernel send `sig` to this process when its parent ends (Linux; False elsewhere).

    `parent`: the pid this process must still be the child of (default: the current parent).
    When it is no longer the parent (it ended before the request took effect), `sig` is sent at
    once. The kernel watches the parent *thread* that forked: fine for supervisord (single
    threaded) and for a process that starts its children from its main thread. Also usable as
    a Popen preexec_fn (`functools.partial(die_with_parent, sig, os.getpid())`).
    """
    prctl = _PRCTL
    if prctl is None:
        return False
    expected = os.getppid() if parent is None else parent
    if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != expected:
        os.kill(os.getpid(), sig)
    return True


def settings_or_exit(process: str) -> Settings:
    """Parse the config once; on a bad value: one ERROR line naming it, exit code 2."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        configure_logging(process)
        logging.getLogger(process).error(
            "config_invalid %s=%r is invalid: %s", exc.variable, exc.value, exc.allowed
        )
        sys.exit(EXIT_CONFIG)
    remember(settings.secret_texts())
    configure_logging(process, settings.log_format, settings.log_level)
    return settings


def exit_config(process: str, exc: ConfigError) -> NoReturn:
    logging.getLogger(process).error(
        "config_invalid %s=%r is invalid: %s", exc.variable, exc.value, exc.allowed
    )
    sys.exit(EXIT_CONFIG)


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`; a second signal is harmless."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


class TaskDied(RuntimeError):
    pass


async def supervise(
    tasks: dict[str, Coroutine[Any, Any, None]],
    stop: asyncio.Event,
    *,
    grace_s: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run named tasks until `stop` is set or one of them ends.

    A task that ends or raises before `stop` is an error (TaskDied): the caller exits non-zero.
    On stop, tasks get `grace_s` to finish by themselves (they watch `stop`), then are cancelled.
    """
    running = {asyncio.create_task(coro, name=name): name for name, coro in tasks.items()}
    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="stop-wait")
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
        died = [t for t in running if t in done]
        if died and not stop.is_set():
            task = died[0]
            name = running[task]
            exc = task.exception() if not task.cancelled() else None
            stop.set()
            await _finish(running, grace_s)
            if exc is not None:
                raise TaskDied(f"task {name} died: {exc!r}") from exc
            raise TaskDied(f"task {name} ended unexpectedly")
        await _finish(running, grace_s)
        if on_stop is not None:
            await on_stop()
    finally:
        stopper.cancel()
        for task in running:
            task.cancel()


async def _finish(running: dict[asyncio.Task[None], str], grace_s: float) -> None:
    pending = [t for t in running if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            log.warning("stop_deadline task %s cancelled after %.1f s", running[task], grace_s)
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
    for task, name in running.items():
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("task_failed %s: %r", name, task.exception())


def run_main(process: str, main: Callable[[Settings], Coroutine[Any, Any, int]]) -> NoReturn:
    """Entry point of a process: config (exit 2 when bad), then `main`, then its exit code.
    SIGTERM (an orderly stop) when the parent, supervisord, ends: no orphan keeps running."""
    die_with_parent(signal.SIGTERM)
    settings = settings_or_exit(process)
    try:
        code = asyncio.run(main(settings))
    except ConfigError as exc:
        exit_config(process, exc)
    except TaskDied as exc:
        logging.getLogger(process).error("process_failed %s", exc)
        code = 1
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
