"""Through a real `celery worker` process on the real Redis, events published by a producer."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from celery import Celery

from tests.conftest import sandbox_env
from tests.e2e.conftest import REPO, wait_for
from tests.factories import event, stream
from worker.domain.events import Status
from worker.sandbox.admin import SimulatorAdmin

pytestmark = pytest.mark.redis


def counts(sims) -> tuple[int, int, int]:
    oracle = SimulatorAdmin(sims.oracle_url).state()
    caliq = SimulatorAdmin(sims.caliq_url).state()
    return len(oracle["interactions"]), len(oracle["phoneCalls"]), len(caliq["interactions"])


def test_forty_threads_shuffled_and_duplicated_make_one_record_per_call(
    start_worker, producer, simulators, database_url
):
    events = stream("e2e", threads=40, seed=3)
    calls = sorted({e["interaction_id"] for e in events})
    start_worker(database_url, "--concurrency", "2")
    for item in events:
        producer(item)
    expected = (len(calls), len(calls), len(calls))
    assert wait_for(lambda: counts(simulators) == expected, timeout=120), counts(simulators)

    oracle = SimulatorAdmin(simulators.oracle_url).state()
    caliq = SimulatorAdmin(simulators.caliq_url).state()
    media = [i["MediaItemId"] for i in oracle["interactions"]]
    assert sorted(media) == calls                         # one interaction per call
    top = {i["MediaItemId"]: i["InteractionId"] for i in oracle["interactions"]}
    for item in oracle["interactions"]:
        root = item["MediaItemId"].split("-c")[0]
        assert item["ParentInteractionId"] == top[root]   # one top-level per thread
    assert sorted(p["ExternalSystemCallId"] for p in oracle["phoneCalls"]) == calls
    for phone_call in oracle["phoneCalls"]:               # complete transcripts, in order
        texts = [base64.b64decode(m["MessageContent"]).decode()
                 for m in phone_call["TranscriptMessage"]]
        assert len(texts) == 8
        assert texts[-1] == "No, that is all. Thank you!"
    assert sorted(c["UniqueID"] for c in caliq["interactions"]) == calls
    print(f"\n40 threads: {len(events)} events, {len(calls)} calls -> "
          f"{len(media)} interactions, {len(oracle['phoneCalls'])} phoneCalls, "
          f"{len(caliq['interactions'])} Caliq interactions")


def test_bad_event_is_recorded_and_the_worker_goes_on(start_worker, producer, simulators,
                                                      database_url):
    from sqlalchemy import create_engine, text

    start_worker(database_url)
    producer({"interaction_id": "bad-1", "status": 3})
    producer(["not", "an", "object"])
    producer(event("after-1", Status.STOPPED))
    assert wait_for(lambda: counts(simulators)[2] == 1, timeout=60)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT error FROM journal WHERE outcome = 'rejected' ORDER BY id")).all()
    engine.dispose()
    errors = [r[0] for r in rows]
    assert any(e.startswith("customer_id: is mandatory") for e in errors), errors
    assert any(e.startswith("event: must be a JSON object") for e in errors), errors


def test_worker_refuses_to_start_without_crm_settings(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORACLE_", "CALIQ_"))}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    env["CELERY_BROKER_URL"] = "memory://"
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "callsync"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    for name in ("ORACLE_BASE_URL", "CALIQ_BASE_URL", "CALIQ_API_KEY", "CALIQ_CHANNEL_ID"):
        assert name in result.stderr, result.stderr


def test_worker_refuses_to_start_on_a_database_it_has_no_driver_for(simulators, tmp_path):
    env = {**os.environ, **sandbox_env(simulators, "postgresql+nosuchdriver://svc:hunter2@db/x"),
           "CELERY_BROKER_URL": "memory://"}
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "callsync"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "DATABASE_URL: no driver for 'postgresql+nosuchdriver'" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_a_worker_reserves_what_its_prefetch_multiplier_allows(start_worker, broker_url,
                                                               database_url):
    start_worker(database_url, "--pool", "threads", "--concurrency", "2",
                 CELERY_PREFETCH_MULTIPLIER="3")
    app = Celery(broker=broker_url)
    try:
        stats = app.control.inspect(timeout=5).stats() or {}
    finally:
        app.close()
    assert [s["prefetch_count"] for s in stats.values()] == [2 * 3]
