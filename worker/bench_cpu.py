"""Where the machine's CPU went during a phase of the benchmark, by group of processes.

The run shares its cores with the database server and the broker, so throughput alone cannot
say whose time an event costs. A reading takes each group's CPU seconds from psutil:

* `worker_main`: the `celery worker` processes themselves (Celery's consumer, the hand-off to
  the pool);
* `worker_pool`: their prefork children, counting those that exited and were reaped (their
  parent's `children_user` and `children_system`), so a recycled child loses nothing;
* `simulators`: the CRM simulators' process;
* `benchmark`: this process (publishing, polling, sampling);
* `rest_of_machine`: the machine's busy time less all of the above: PostgreSQL, Redis and
  whatever else runs on the machine.

`cores_stolen` is the hypervisor's steal time over the phase, in cores: CPU the virtual machine
wanted and its host gave to another guest. It tells a host that took the CPU away from one
whose CPU was merely slower (the same work taking longer shows in the groups, not here).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psutil

GROUPS = ("worker_main", "worker_pool", "simulators", "benchmark")
# Busy time of the machine: steal (the hypervisor's) and idle/iowait are not busy for this run.
_BUSY = ("user", "nice", "system", "irq", "softirq")


@dataclass(frozen=True)
class CpuReading:
    at: float                    # monotonic seconds
    groups: dict[str, float]     # CPU seconds so far, by group
    machine: float               # busy CPU seconds of the whole machine, all cores together
    stolen: float = 0.0          # the hypervisor's steal seconds, all cores together


def _own(times: Any) -> float:
    return float(times.user + times.system)


def _tree(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, its descendants': live ones and reaped ones)."""
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        descendants = float(times.children_user + times.children_system)
        for child in proc.children(recursive=True):
            with suppress(psutil.Error):   # exited since the listing: its parent reaps it
                descendants += _own(child.cpu_times())
        return _own(times), descendants
    except psutil.Error:
        return 0.0, 0.0


def machine_times() -> tuple[float, float]:
    """(busy CPU seconds, stolen CPU seconds) of the whole machine so far."""
    times = psutil.cpu_times()
    return (float(sum(getattr(times, name, 0.0) for name in _BUSY)),
            float(getattr(times, "steal", 0.0)))   # Linux only; elsewhere nothing is stolen


@dataclass(frozen=True)
class CpuMeter:
    workers: list[int]
    simulators: int | None = None
    benchmark: int = field(default_factory=os.getpid)

    def read(self) -> CpuReading:
        main = pool = 0.0
        for pid in self.workers:
            own, descendants = _tree(pid)
            main, pool = main + own, pool + descendants
        simulators = sum(_tree(self.simulators)) if self.simulators is not None else 0.0
        # Its own time only: its children are the workers and the simulators.
        benchmark = _own(psutil.Process(self.benchmark).cpu_times())
        busy, stolen = machine_times()
        return CpuReading(time.monotonic(), {
            "worker_main": main, "worker_pool": pool, "simulators": simulators,
            "benchmark": benchmark}, busy, stolen)


def cpu_split(spans: Sequence[tuple[CpuReading, CpuReading]], units: int, per: str
              ) -> dict[str, Any]:
    """Milliseconds of CPU per unit (`per`: task, event) by group over the spans (each a start
    and an end reading, taken together), and how many cores were busy on average."""
    seconds = max(sum(end.at - start.at for start, end in spans), 1e-9)
    used = {group: sum(max(0.0, end.groups[group] - start.groups[group])
                       for start, end in spans) for group in GROUPS}
    # The machine's counter and the processes' are read a moment apart: never below their sum.
    machine = max(sum(end.machine - start.machine for start, end in spans), sum(used.values()))
    used["rest_of_machine"] = machine - sum(used.values())
    used["all"] = machine
    stolen = sum(max(0.0, end.stolen - start.stolen) for start, end in spans)
    return {
        "seconds": round(seconds, 3),
        "cores_busy": round(machine / seconds, 2),
        "cores_stolen": round(stolen / seconds, 3),
        f"ms_per_{per}": {group: round(value / max(units, 1) * 1000, 3)
                          for group, value in used.items()},
    }
