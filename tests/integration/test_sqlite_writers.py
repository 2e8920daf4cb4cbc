"""SQLite writers queue on a file lock (worker.adapters.db.WriterLockedConnection), for real."""

from __future__ import annotations

import subprocess
import sys
import threading

from sqlalchemy import text

from worker.adapters.db import make_engine


def _engine(tmp_path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    return engine


def _write_in_thread(engine, n: int, started: threading.Event):  # type: ignore[no-untyped-def]
    def write() -> None:
        with engine.begin() as conn:
            started.set()
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_a_second_writer_waits_for_the_first_to_commit_then_goes(tmp_path):
    engine = _engine(tmp_path)
    assert (tmp_path / "w.db-writer.lock").exists()
    with engine.connect() as holder:
        tx = holder.begin()
        holder.execute(text("INSERT INTO t VALUES (1)"))
        started = threading.Event()
        second = _write_in_thread(engine, 2, started)
        assert not started.wait(0.5), "the second writer began while the first held the lock"
        tx.commit()
        assert started.wait(10), "the second writer did not wake up after the commit"
        second.join(10)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]


def test_a_rollback_lets_the_next_writer_go(tmp_path):
    engine = _engine(tmp_path)
    with engine.connect() as holder:
        tx = holder.begin()
        started = threading.Event()
        second = _write_in_thread(engine, 2, started)
        assert not started.wait(0.5)
        tx.rollback()
        assert started.wait(10)
        second.join(10)


def test_a_writer_that_dies_holding_the_lock_does_not_block_the_others(tmp_path):
    engine = _engine(tmp_path)
    script = (
        "import os, sys; from worker.adapters.db import make_engine\n"
        f"conn = make_engine({str(engine.url)!r}).connect(); conn.begin()\n"
        "conn.exec_driver_sql('INSERT INTO t VALUES (9)')\n"
        "print('holding', flush=True); sys.stdin.readline(); os._exit(1)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = threading.Event()
        second = _write_in_thread(engine, 2, started)
        assert not started.wait(0.5)
        holder.stdin.write("die\n")
        holder.stdin.flush()
        assert started.wait(20), "the lock of a dead process was not given back"
        second.join(20)
    finally:
        holder.kill()
        holder.wait()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [2]
