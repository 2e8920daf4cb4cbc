"""The benchmark's CPU split: the arithmetic, and readings of real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from worker.bench_cpu import GROUPS, CpuMeter, CpuReading, cpu_split


def reading(at: float, machine: float, stolen: float = 0.0, **groups: float) -> CpuReading:
    return CpuReading(at, {g: groups.get(g, 0.0) for g in GROUPS}, machine, stolen)


def test_cpu_per_unit_by_group_and_the_rest_of_the_machine() -> None:
    start = reading(10.0, 100.0, worker_main=1.0, worker_pool=2.0, simulators=0.5, benchmark=0.2)
    end = reading(14.0, 107.0, worker_main=2.0, worker_pool=6.0, simulators=0.9, benchmark=0.3)

    split = cpu_split([(start, end)], 1000, per="event")

    assert split["seconds"] == 4.0
    assert split["cores_busy"] == 1.75   # 7 CPU seconds in 4 s
    assert split["ms_per_event"] == {
        "worker_main": 1.0, "worker_pool": 4.0, "simulators": 0.4, "benchmark": 0.1,
        "rest_of_machine": 1.5, "all": 7.0,
    }


def test_the_machine_is_never_counted_below_its_processes() -> None:
    # Read a moment apart, the machine's counter can lag the processes' by a tick.
    start = reading(0.0, 50.0)
    end = reading(1.0, 50.9, worker_main=0.5, worker_pool=0.5)

    ms = cpu_split([(start, end)], 100, per="task")["ms_per_task"]

    assert ms["rest_of_machine"] == 0.0
    assert ms["all"] == pytest.approx(ms["worker_main"] + ms["worker_pool"]) == 10.0


def test_spans_apart_are_added_and_the_time_between_them_is_not_counted() -> None:
    # The no-op ceiling is measured before the events and after them: two spans of one figure.
    before = (reading(0.0, 10.0, worker_main=1.0), reading(2.0, 12.0, worker_main=2.0))
    after = (reading(60.0, 200.0, worker_main=50.0), reading(63.0, 203.0, worker_main=52.5))

    split = cpu_split([before, after], 500, per="task")

    assert split["seconds"] == 5.0        # not the 63 s from the first reading to the last
    assert split["cores_busy"] == 1.0     # 5 CPU seconds in those 5 s
    assert split["ms_per_task"]["worker_main"] == 7.0     # (1.0 + 2.5) s over 500 tasks
    assert split["ms_per_task"]["rest_of_machine"] == 3.0


def test_stolen_time_is_given_in_cores_over_the_spans_and_is_not_busy_time() -> None:
    before = (reading(0.0, 10.0, stolen=3.0), reading(2.0, 11.0, stolen=3.2))
    after = (reading(60.0, 200.0, stolen=9.0), reading(63.0, 201.0, stolen=9.8))

    split = cpu_split([before, after], 100, per="task")

    assert split["cores_stolen"] == 0.2   # (0.2 + 0.8) s stolen in 5 s, not the 6.8 s between
    assert split["cores_busy"] == 0.4     # the busy counter alone: 2 s in 5 s


# A stand-in for a prefork worker: it forks a child on request, which spends CPU and exits;
# the parent reaps it and says so.
_FORKING_PARENT = textwrap.dedent("""
    import os, sys, time
    sys.stdin.readline()
    pid = os.fork()
    if pid == 0:
        started = time.process_time()
        while time.process_time() - started < 0.4:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
    sys.stdin.readline()
""")


def test_a_pool_child_that_exited_still_counts_for_the_pool() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _FORKING_PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdin is not None and parent.stdout is not None
    try:
        meter = CpuMeter([parent.pid])
        before = meter.read()
        parent.stdin.write("fork\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "reaped"
        after = meter.read()
    finally:
        parent.stdin.write("exit\n")
        parent.stdin.close()
        parent.wait(timeout=10)

    pool = after.groups["worker_pool"] - before.groups["worker_pool"]
    main = after.groups["worker_main"] - before.groups["worker_main"]
    assert pool >= 0.3
    assert main < 0.2            # the parent only waited
    assert after.machine - before.machine >= pool - 0.05


def test_the_benchmark_counts_itself_without_its_children() -> None:
    meter = CpuMeter([])
    before = meter.read()
    child = subprocess.run([sys.executable, "-c",
                            "import time\nt = time.process_time()\n"
                            "while time.process_time() - t < 0.3: pass"], check=True)
    assert child.returncode == 0
    after = meter.read()
    assert after.groups["benchmark"] - before.groups["benchmark"] < 0.2
