"""Helpers the test modules share. pytest puts tests/ on sys.path (it has no __init__.py), so a
test module imports them as `from helpers import ...`."""

from __future__ import annotations

import faulthandler
import sys
import threading
from collections.abc import Callable
from typing import Any


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Runs `work` in a thread; its return value lands in `out["result"]`, its error in
    `out["error"]`. Collect both with `finished`."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = work()
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def finished(thread: threading.Thread, out: dict[str, Any], timeout: float) -> Any:
    """Waits up to `timeout` s for the work of `in_background`; returns its result or raises its
    error. Work still running fails the test, after every thread's Python stack is dumped."""
    thread.join(timeout)
    if thread.is_alive():
        # Where the work is stuck: every thread's Python stack (the test's own timeout comes
        # before pytest-timeout's, so conftest's stack dump would not run).
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
    assert not thread.is_alive(), f"the work did not finish within {timeout}s"
    if "error" in out:
        raise out["error"]
    return out.get("result")
