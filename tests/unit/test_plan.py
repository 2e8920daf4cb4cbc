from datetime import datetime, timedelta

from tests.factories import call_state, thread_state
from worker.domain.events import Status
from worker.domain.plan import (
    CallSync,
    LegState,
    StepKind,
    next_step,
)

NOW = datetime(2026, 11, 24, 12, 0)


call = call_state
thread_with = thread_state


def finish(c, leg, remote="1"):
    c.legs[leg].state = LegState.DONE
    c.legs[leg].remote_id = remote


def test_new_root_creates_top_level_then_nothing_until_stopped():
    root = call("root")
    t = thread_with(root)
    assert next_step(t, NOW).kind is StepKind.CREATE_TOP_LEVEL
    finish(root, "oracle_interaction")
    t.top_level_id, t.top_level_call_id = 1, "root"
    assert next_step(t, NOW) is None
    assert root.sync_state() is CallSync.OPEN


def test_stopped_call_walks_end_phone_call_then_caliq():
    root = call("root", Status.STOPPED)
    t = thread_with(root, top=1, owner="root")
    finish(root, "oracle_interaction")
    order = []
    while (step := next_step(t, NOW)) is not None:
        order.append(step.kind)
        finish(root, step.leg)
    assert order == [StepKind.END_INTERACTION, StepKind.CREATE_PHONE_CALL, StepKind.CREATE_CALIQ]
    assert root.sync_state() is CallSync.SYNCED


def test_consult_first_opens_placeholder_then_child_then_root_adopts():
    consult = call("root-c1", thread_id="root", parent_id="root")
    t = thread_with(consult)
    assert next_step(t, NOW).kind is StepKind.CREATE_PLACEHOLDER
    t.top_level_id = 1
    assert next_step(t, NOW).kind is StepKind.CREATE_CHILD
    finish(consult, "oracle_interaction", "2")
    root = call("root", thread_id="root")
    t.calls["root"] = root
    step = next_step(t, NOW)
    assert (step.kind, step.call_id) == (StepKind.ADOPT_TOP_LEVEL, "root")


def test_only_one_top_level_when_two_calls_could_be_root():
    a = call("root", thread_id="root")
    b = call("other", thread_id="root")  # no parent: also a root candidate
    t = thread_with(b, a)
    first = next_step(t, NOW)
    assert (first.kind, first.call_id) == (StepKind.CREATE_TOP_LEVEL, "root")
    finish(a, "oracle_interaction")
    t.top_level_id, t.top_level_call_id = 1, "root"
    assert next_step(t, NOW).kind is StepKind.CREATE_CHILD


def test_caliq_goes_on_when_oracle_failed():
    c = call("root", Status.STOPPED)
    c.legs["oracle_interaction"].state = LegState.FAILED
    t = thread_with(c)
    assert next_step(t, NOW).kind is StepKind.CREATE_CALIQ
    finish(c, "caliq")
    assert next_step(t, NOW) is None
    assert c.sync_state() is CallSync.FAILED


def test_retry_waits_for_its_time():
    c = call("root")
    c.legs["oracle_interaction"].state = LegState.RETRY
    c.legs["oracle_interaction"].next_attempt_at = NOW + timedelta(seconds=30)
    t = thread_with(c)
    assert next_step(t, NOW) is None
    assert c.sync_state() is CallSync.RETRYING
    assert next_step(t, NOW + timedelta(seconds=31)).kind is StepKind.CREATE_TOP_LEVEL


def test_parked_leg_is_not_retried():
    c = call("root")
    c.legs["oracle_interaction"].state = LegState.PARKED
    assert next_step(thread_with(c), NOW + timedelta(days=1)) is None
    assert c.sync_state() is CallSync.PARKED
