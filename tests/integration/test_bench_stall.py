"""The benchmark's Staller on real processes: it freezes whole process trees, always thaws them."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import psutil
import pytest

from worker.bench_stall import Staller

# Prints its monotonic clock every 10 ms for `seconds`, with a child that sleeps meanwhile.
TICKER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         stdout=subprocess.DEVNULL)
print(child.pid, flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    print(time.monotonic(), flush=True)
    time.sleep(0.01)
child.kill()
"""


def ticker(seconds: float) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, "-c", TICKER, str(seconds)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def status(pid: int) -> str:
    return psutil.Process(pid).status()


def test_each_stall_freezes_the_process_and_its_children_for_its_length() -> None:
    process, child = ticker(1.6)
    staller = Staller([process.pid], stall_seconds=0.25, every_seconds=0.6).start()
    try:
        time.sleep(0.1)   # inside the first stall, which starts at once
        assert status(process.pid) == status(child) == psutil.STATUS_STOPPED
        time.sleep(1.45)   # past the third stall (1.2-1.45 s), before a fourth
    finally:
        staller.stop()
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    ticks = [float(line) for line in out.split()]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # Stalls at 0, 0.6 and 1.2 s; the first one may have come before the first tick.
    assert staller.stalls == 3
    assert len([gap for gap in gaps if gap > 0.2]) in (2, 3), sorted(gaps)[-4:]
    assert max(gaps) < 0.35
    assert staller.frozen_seconds == pytest.approx(0.75, abs=0.1)


def test_stopping_in_the_middle_of_a_stall_thaws_every_process() -> None:
    process, child = ticker(30)
    try:
        staller = Staller([process.pid], stall_seconds=20, every_seconds=21).start()
        time.sleep(0.2)
        assert status(process.pid) == psutil.STATUS_STOPPED
        started = time.monotonic()
        staller.stop()
        assert time.monotonic() - started < 2
        assert status(process.pid) != psutil.STATUS_STOPPED
        assert status(child) != psutil.STATUS_STOPPED
        assert staller.stalls == 1
    finally:
        process.kill()
        process.communicate(timeout=10)
        psutil.Process(child).kill()


def test_a_stall_longer_than_its_period_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than its period"):
        Staller([1], stall_seconds=2.0, every_seconds=2.0)
