"""Stalls for the benchmark: the worker processes frozen for a moment, again and again.

A virtual machine whose host takes its CPU away, a process swapped out or descheduled among
busier ones: the worker stops running for a few hundred milliseconds and carries on as if
nothing happened. The shared rate limit must hold through that (worker.adapters.ratelimit), and
a benchmark that can only show it on a quiet host shows too little. `callsync bench --stall-ms`
freezes every worker process and its pool children with SIGSTOP and thaws them with SIGCONT.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

from worker.bench_env import process_trees

STALL_EVERY_SECONDS = 2.0


@dataclass
class Staller:
    """Freezes the process trees of `pids` for `stall_seconds` every `every_seconds`.

    The first stall starts at once, so that a short run has one too. Every frozen process is
    thawed before `stop` returns, whatever happened in between.
    """

    pids: list[int]
    stall_seconds: float
    every_seconds: float = STALL_EVERY_SECONDS
    stalls: int = 0
    frozen_seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _frozen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.stall_seconds < self.every_seconds:
            raise ValueError(f"a stall of {self.stall_seconds}s must be shorter than its period "
                             f"of {self.every_seconds}s")

    def start(self) -> Staller:
        self._thread = threading.Thread(target=self._run, name="bench-staller", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._freeze()
            try:
                self._stop.wait(self.stall_seconds)
            finally:
                self._thaw()
            self.stalls += 1
            self.frozen_seconds += time.monotonic() - started
            self._stop.wait(self.every_seconds - self.stall_seconds)

    def _freeze(self) -> None:
        # Listed at each stall: a prefork pool replaces its children.
        for proc in process_trees(self.pids):
            try:
                os.kill(proc.pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            self._frozen.append(proc.pid)

    def _thaw(self) -> None:
        while self._frozen:
            try:
                os.kill(self._frozen.pop(), signal.SIGCONT)
            except ProcessLookupError:
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thaw()
