"""The replay's pure parts: time options, selections, and the dry run's list of requests."""

from datetime import datetime, timedelta
from functools import partial

import pytest

from tests.factories import call_state, thread_state
from worker.domain.events import Status
from worker.domain.plan import LegState
from worker.replay import Selection, parse_when, planned_requests

NOW = datetime(2026, 11, 24, 12, 0)


call = partial(call_state, status=Status.STOPPED)
thread_with = thread_state


def done(c, leg, remote="1"):
    c.legs[leg].state, c.legs[leg].remote_id = LegState.DONE, remote


def plan(t):
    return [(cid, r.method, r.path, r.look_up_first) for cid, r in planned_requests(t, NOW)]


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", NOW - timedelta(minutes=30)),
    ("2h", NOW - timedelta(hours=2)),
    ("1.5d", NOW - timedelta(days=1.5)),
    ("2026-11-24T09:00:00Z", datetime(2026, 11, 24, 9, 0)),
    ("2026-11-24T10:00:00+01:00", datetime(2026, 11, 24, 9, 0)),   # to naive UTC
    ("2026-11-24 09:00", datetime(2026, 11, 24, 9, 0)),
    (None, None), ("  ", None),
])
def test_parse_when(text, expected):
    assert parse_when(text, NOW) == expected


def test_parse_when_names_a_bad_value():
    with pytest.raises(ValueError, match="'yesterday': not a time"):
        parse_when("yesterday", NOW)


def test_selection_refuses_unknown_states_and_legs():
    with pytest.raises(ValueError, match="unknown state 'broken'"):
        Selection(states=("broken",))
    with pytest.raises(ValueError, match="unknown leg 'oracle'"):
        Selection(legs=("oracle",))
    assert Selection().empty and Selection(limit=5).empty
    assert not Selection(ids=("x",)).empty


def test_a_stopped_call_from_nothing_is_three_creates():
    t = thread_with(call("root"))
    assert plan(t) == [("root", "POST", "interactions", False),   # created closed: no PATCH
                       ("root", "POST", "phoneCalls", False),
                       ("root", "POST", "api/v1/InteractionCreate", False)]


def test_resuming_after_the_phone_call_failed_looks_it_up_first():
    root = call("root")
    done(root, "oracle_interaction", "300")
    done(root, "oracle_end", "300")
    done(root, "caliq", "root")
    root.legs["oracle_phone_call"].attempts = 1          # a replay reset keeps the count
    t = thread_with(root, top=300, owner="root")
    assert plan(t) == [("root", "POST", "phoneCalls", True)]


def test_consult_first_plans_placeholder_then_child_then_the_root_adopts_it():
    consult = call("root-c1", thread_id="root", parent_id="root")
    root = call("root", thread_id="root")
    t = thread_with(consult)
    steps = plan(t)
    assert steps[:2] == [("root-c1", "POST", "interactions", False),
                         ("root-c1", "POST", "interactions/{new}/child/childInteractions", False)]
    t = thread_with(consult, root)
    consult.legs = {name: type(leg)() for name, leg in consult.legs.items()}
    steps = plan(t)
    assert steps[0] == ("root", "POST", "interactions", False)
    assert ("root-c1", "POST", "interactions/{new}/child/childInteractions", False) in steps


def test_open_call_end_is_a_patch_of_its_own_interaction():
    root = call("root")
    done(root, "oracle_interaction", "300")
    t = thread_with(root, top=300, owner="root")
    assert plan(t)[0] == ("root", "PATCH", "interactions/300", False)


def test_top_level_in_doubt_is_looked_up_before_it_is_created():
    root = call("root", status=Status.NEW)
    root.legs["oracle_interaction"].attempts = 2
    t = thread_with(root)
    assert plan(t) == [("root", "POST", "interactions", True)]
