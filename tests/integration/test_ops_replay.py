"""Replay, failures and status over a real database (SQLite and PostgreSQL) and real HTTP."""

from __future__ import annotations

from sqlalchemy import select

from tests.factories import call_events, thread_events
from worker.adapters import queries
from worker.adapters.models import LegRow
from worker.commands.views import status_view
from worker.replay import Selection, replay
from worker.sandbox.admin import SimulatorAdmin
from worker.service import handle_event


def apply(svc, events) -> None:
    for e in events:
        handle_event(svc, e)


def oracle(sims) -> SimulatorAdmin:
    return SimulatorAdmin(sims.oracle_url)


def caliq(sims) -> SimulatorAdmin:
    return SimulatorAdmin(sims.caliq_url)


def sent(sims) -> int:
    return len(oracle(sims).requests_log()) + len(caliq(sims).requests_log())


def test_failed_call_is_listed_dry_run_sends_nothing_replay_completes_it(make_services,
                                                                       simulators):
    oracle(simulators).set_faults([{"method": "POST", "path": "phoneCalls", "action": "400",
                                    "times": 1}])
    svc = make_services()
    apply(svc, call_events("f-1"))
    apply(svc, call_events("ok-1"))

    with svc.transaction() as s:
        [failure] = queries.failures(s)
    assert (failure.interaction_id, failure.leg, failure.state) == ("f-1", "oracle_phone_call",
                                                                    "failed")
    assert "HTTP 400" in failure.error and failure.attempts == 1

    before = sent(simulators)
    dry = replay(svc, Selection(), dry_run=True)
    assert sent(simulators) == before                       # dry run: nothing left callsync
    [planned] = dry.results
    assert planned.interaction_id == "f-1" and planned.outcome == "would_send"
    assert [(r.crm, r.method, r.path) for r in planned.requests] == [
        ("oracle", "POST", "phoneCalls")]
    assert planned.requests[0].look_up_first                # attempts kept: it looks first
    with svc.transaction() as s:                            # ... and nothing was written
        assert queries.call_sync_states(s, ["f-1"]) == {"f-1": "failed"}

    report = replay(svc, Selection())
    assert [(r.interaction_id, r.before, r.after, r.outcome) for r in report.results] == [
        ("f-1", "failed", "synced", "ok")]
    assert not report.failed
    assert [(r.method, r.path, r.status) for r in report.results[0].requests] == [
        ("GET", "phoneCalls", 200), ("POST", "phoneCalls", 201)]
    phone_calls = oracle(simulators).state()["phoneCalls"]
    assert sorted(p["ExternalSystemCallId"] for p in phone_calls) == ["f-1", "ok-1"]
    with svc.transaction() as s:
        assert queries.failures(s) == []
        [leg] = s.scalars(select(LegRow).where(LegRow.interaction_id == "f-1",
                                               LegRow.leg == "oracle_phone_call"))
    assert leg.attempts == 1 and leg.state == "done"         # the count was kept


def test_replay_of_a_record_that_landed_unseen_never_duplicates(make_services, simulators):
    # The answer is lost after Oracle created the phoneCall, and the service gives up at once:
    # the leg says failed, yet the record exists. A replay must find it, not create another.
    oracle(simulators).set_faults([{"method": "POST", "path": "phoneCalls$",
                                    "action": "drop_after_apply", "times": 1}])
    svc = make_services(retry_max_attempts=1)
    apply(svc, call_events("lost-1"))
    with svc.transaction() as s:
        assert queries.call_sync_states(s, ["lost-1"]) == {"lost-1": "failed"}
    assert len(oracle(simulators).state()["phoneCalls"]) == 1

    report = replay(svc, Selection(ids=("lost-1",)))
    assert report.results[0].outcome == "ok"
    assert [(r.method, r.path) for r in report.results[0].requests] == [("GET", "phoneCalls")]
    assert len(oracle(simulators).state()["phoneCalls"]) == 1


def test_parked_call_resumes_once_credentials_are_fixed(make_services, simulators):
    bad = make_services(caliq_api_key="wrong-key")
    apply(bad, call_events("p-1"))
    with bad.transaction() as s:
        [failure] = queries.failures(s, leg="caliq")
    assert failure.state == "parked" and "401" in failure.error
    assert replay(bad, Selection(states=("parked",))).failed     # still wrong: exit code 1

    good = make_services()
    report = replay(good, Selection(states=("parked",), legs=("caliq",)))
    assert [(r.interaction_id, r.reset, r.outcome) for r in report.results] == [
        ("p-1", ["caliq"], "ok")]
    assert [c["UniqueID"] for c in caliq(simulators).state()["interactions"]] == ["p-1"]
    assert len(oracle(simulators).state()["interactions"]) == 1


def test_selection_by_leg_state_and_window(make_services, simulators):
    oracle(simulators).set_faults([{"method": "POST", "path": "phoneCalls", "action": "400",
                                    "times": 1}])
    caliq(simulators).set_faults([{"method": "POST", "path": "InteractionCreate",
                                   "action": "400", "times": 1}])
    svc = make_services()
    apply(svc, call_events("a"))     # phoneCall fails (first fault), Caliq fails too
    apply(svc, call_events("b"))     # everything succeeds
    with svc.transaction() as s:
        by_leg = queries.select_calls(s, legs=("caliq",))
        failed = queries.select_calls(s, states=("failed",))
        synced = queries.select_calls(s, states=("synced",))
        later = queries.select_calls(s, since=svc.clock())
        [row] = queries.failures(s)
        caliq_rows = queries.failures(s, leg="caliq")
    assert [t.interaction_id for t in by_leg] == ["a"]
    assert [t.interaction_id for t in failed] == ["a"]
    assert [t.interaction_id for t in synced] == ["b"]
    assert later == []
    assert row.leg == "oracle_phone_call"            # one row per call: its first stuck leg
    assert [r.leg for r in caliq_rows] == ["caliq"]

    # Only the Caliq leg is replayed: the phoneCall stays failed and the replay says so.
    report = replay(svc, Selection(ids=("a",), legs=("caliq",)))
    [result] = report.results
    assert result.reset == ["caliq"] and result.outcome == "failed" and report.failed
    assert "HTTP 400" in result.error
    assert sorted(c["UniqueID"] for c in caliq(simulators).state()["interactions"]) == ["a", "b"]


def test_bad_input_shows_as_leg_input(make_services, simulators):
    svc = make_services()
    handle_event(svc, {"interaction_id": "bad-1", "status": 3})
    handle_event(svc, ["not", "an", "object"])
    with svc.transaction() as s:
        rows = queries.failures(s)
        only_input = queries.failures(s, leg="input")
        none_of_leg = queries.failures(s, leg="caliq")
    assert {(r.interaction_id, r.leg, r.state) for r in rows} == {
        ("bad-1", "input", "rejected"), (None, "input", "rejected")}
    assert any(r.error.startswith("customer_id: is mandatory") for r in rows)
    assert len(only_input) == 2 and none_of_leg == []


def test_resync_patches_current_fields_of_synced_calls(make_services, simulators):
    svc = make_services()
    apply(svc, thread_events("rs", consults=1))
    items = {i["MediaItemId"]: i for i in oracle(simulators).state()["interactions"]}
    mapped = items["rs-c1"]["Description"]
    # Someone (or an old mapping) changed the record: a resync puts the mapped fields back.
    oracle_url = simulators.oracle_url + "/crmRestApi/resources/11.13.18.05"
    import requests

    requests.patch(f"{oracle_url}/interactions/{items['rs-c1']['InteractionId']}",
                   json={"Description": "stale"}, auth=("sandbox", "sandbox-password"),
                   timeout=5).raise_for_status()
    before = len(oracle(simulators).requests_log())

    dry = replay(svc, Selection(ids=("rs-c1",)), resync=True, dry_run=True)
    assert [(r.method, r.path) for r in dry.results[0].requests] == [
        ("PATCH", f"interactions/{items['rs-c1']['InteractionId']}")]
    assert len(oracle(simulators).requests_log()) == before

    report = replay(svc, Selection(ids=("rs-c1",)), resync=True)
    assert report.results[0].outcome == "ok"
    items = {i["MediaItemId"]: i for i in oracle(simulators).state()["interactions"]}
    assert items["rs-c1"]["Description"] == mapped
    assert len(items) == 2
    with svc.transaction() as s:
        view = status_view(queries.timeline(s, "rs-c1"))
        thread = s.get(queries.ThreadRow, "rs")
    assert view["timeline"][-1]["leg"] == "resync"
    assert thread.lease_owner is None                       # the lease was given back


def test_status_shows_the_whole_timeline(make_services, simulators):
    oracle(simulators).set_faults([{"method": "POST", "path": "phoneCalls", "action": "503",
                                    "times": 1}])
    svc = make_services()
    apply(svc, call_events("st-1"))
    with svc.transaction() as s:
        view = status_view(queries.timeline(s, "st-1"))
        assert status_view(queries.timeline(s, "nobody")) is None
    assert view["state"] == "retrying" and "HTTP 503" in view["error"]
    assert view["thread"] == "st-1" and view["status"] == "STOPPED"
    events = [i for i in view["timeline"] if i["kind"] == "event"]
    assert [(e["status"], e["outcome"]) for e in events] == [
        ("NEW", "accepted"), ("IN_PROCESS", "accepted"), ("STOPPED", "accepted")]
    requests = [(i["crm"], i["method"], i["path"].split("/")[0], i["status"])
                for i in view["timeline"] if i["kind"] == "request"]
    assert requests == [("oracle", "POST", "interactions", 201),
                        ("oracle", "PATCH", "interactions", 200),
                        ("oracle", "POST", "phoneCalls", 503),
                        ("caliq", "POST", "api", 200)]
    assert view["records"]["oracle_interaction_id"] is not None
    assert view["records"]["caliq_unique_id"] == "st-1"
    assert view["records"]["oracle_phone_call_id"] is None
    assert "charged twice" not in str(view)                 # the transcript never shows
