"""The service layer end to end over a real database (SQLite and PostgreSQL) and real HTTP."""

from __future__ import annotations

import base64
import json
import random

import pytest
from sqlalchemy import select

from tests.factories import call_events, event, stream, thread_events
from worker.adapters.models import CallRow, JournalRow, LegRow, RequestRow
from worker.domain.events import Status
from worker.sandbox.admin import SimulatorAdmin
from worker.service import handle_event


def crm_state(sims) -> tuple[dict, dict]:
    return SimulatorAdmin(sims.oracle_url).state(), SimulatorAdmin(sims.caliq_url).state()


def crm_requests(sims) -> list[dict]:
    return (SimulatorAdmin(sims.oracle_url).requests_log()
            + SimulatorAdmin(sims.caliq_url).requests_log())


def apply(svc, events):
    return [handle_event(svc, e)[0] for e in events]


def by_media_item(oracle: dict) -> dict[str, dict]:
    items = {}
    for item in oracle["interactions"]:
        assert item["MediaItemId"] not in items, f"duplicate interaction {item['MediaItemId']}"
        items[item["MediaItemId"]] = item
    return items


def test_one_call_becomes_interaction_phone_call_and_caliq(make_services, simulators):
    svc = make_services()
    apply(svc, call_events("call-1"))
    oracle, caliq = crm_state(simulators)
    [interaction] = oracle["interactions"]
    assert interaction["OriginalSystemReference"] == "call-1"
    assert interaction["MediaItemId"] == "call-1"
    assert interaction["StatusCd"] == "ORA_SVC_CLOSED"
    assert interaction["EndTime"]
    assert interaction["DirectionCd"] == "ORA_SVC_INBOUND"
    [phone_call] = oracle["phoneCalls"]
    assert phone_call["ExternalSystemCallId"] == "call-1"
    assert phone_call["InteractionId"] == interaction["InteractionId"]
    assert phone_call["RecordingURL"].endswith("call-1.wav")
    messages = phone_call["TranscriptMessage"]
    texts = [base64.b64decode(m["MessageContent"]).decode() for m in messages]
    assert len(texts) == 8
    assert texts[0].startswith("Thank you for calling")
    assert "4111 1111 1111 1111" not in " ".join(texts)  # redacted before it left callsync
    assert "1111" in texts[3]
    assert [m["PostedByDisplayName"] for m in phone_call["TranscriptMessage"][:2]] == [
        "Agent", "Customer"]
    [created] = caliq["interactions"]
    assert created["UniqueID"] == "call-1"
    assert created["Kind"] == "C"
    assert created["ChannelID"] == 1
    assert created["CustomerID"] == 4242
    assert created["ContactedBy"] == "E101"
    assert (created["ContactedFirstName"], created["ContactedSurname"]) == ("Ada", "Lovelace")
    assert "4111 1111 1111 1111" not in created.get("Notes", "")
    methods = [(r["method"], r["path"].split("/")[-1]) for r in crm_requests(simulators)]
    assert len(methods) == 4, methods   # POST interaction, PATCH end, POST phoneCall, POST Caliq


def test_stopped_first_needs_three_requests(make_services, simulators):
    svc = make_services()
    apply(svc, [event("call-s", Status.STOPPED)])
    assert len(crm_requests(simulators)) == 3
    oracle, caliq = crm_state(simulators)
    assert oracle["interactions"][0]["StatusCd"] == "ORA_SVC_CLOSED"
    assert len(oracle["phoneCalls"]) == len(caliq["interactions"]) == 1
    # The earlier events, arriving late, change nothing.
    apply(svc, [event("call-s", Status.NEW), event("call-s", Status.IN_PROCESS)])
    assert len(crm_requests(simulators)) == 3
    with svc.transaction() as s:
        outcomes = list(s.scalars(select(JournalRow.outcome).order_by(JournalRow.id)))
    assert outcomes == ["accepted", "stale", "stale"]


def test_thread_root_and_consults_hang_under_one_top_level(make_services, simulators):
    svc = make_services()
    apply(svc, thread_events("root", consults=2))
    oracle, caliq = crm_state(simulators)
    items = by_media_item(oracle)
    assert len(caliq["interactions"]) == 3
    top = items["root"]["InteractionId"]
    assert items["root"]["TopLevelFlag"] in ("true", True)
    for consult in ("root-c1", "root-c2"):
        assert items[consult]["ParentInteractionId"] == top
        assert items[consult]["TopLevelFlag"] in ("false", False)
    assert len(oracle["phoneCalls"]) == 3
    assert sorted(c["UniqueID"] for c in caliq["interactions"]) == ["root", "root-c1", "root-c2"]


def test_consult_before_root_still_one_top_level(make_services, simulators):
    svc = make_services()
    events = thread_events("root", consults=1)
    consult_first = [e for e in events if e["interaction_id"] != "root"] + [
        e for e in events if e["interaction_id"] == "root"]
    apply(svc, consult_first)
    oracle, _ = crm_state(simulators)
    items = by_media_item(oracle)
    assert set(items) == {"root", "root-c1"}
    assert items["root-c1"]["ParentInteractionId"] == items["root"]["InteractionId"]
    assert items["root"]["OriginalSystemReference"] == "root"
    assert items["root"]["Description"] != "Conversation thread root"  # the root's own data


@pytest.mark.parametrize("seed", [1, 2])
def test_shuffled_duplicated_stream_makes_one_record_per_call(make_services, simulators, seed):
    svc = make_services()
    events = stream("t", threads=8, seed=seed)
    apply(svc, events)
    calls = {e["interaction_id"] for e in events}
    oracle, caliq = crm_state(simulators)
    items = by_media_item(oracle)
    assert set(items) == calls
    assert sorted(p["ExternalSystemCallId"] for p in oracle["phoneCalls"]) == sorted(calls)
    assert sorted(c["UniqueID"] for c in caliq["interactions"]) == sorted(calls)
    assert all(len(p["TranscriptMessage"]) == 8 for p in oracle["phoneCalls"])
    for call_id, item in items.items():
        root = call_id.split("-c")[0]
        assert item["ParentInteractionId"] == items[root]["InteractionId"]
    with svc.transaction() as s:
        states = set(s.scalars(select(CallRow.sync_state)))
    assert states == {"synced"}


def test_every_event_twice_sends_nothing_twice(make_services, simulators):
    svc = make_services()
    events = call_events("dup")
    apply(svc, events)
    before = len(crm_requests(simulators))
    received = apply(svc, events)
    assert [r.outcome for r in received] == ["duplicate"] * 3
    assert len(crm_requests(simulators)) == before


BAD_EVENTS = [
    ("not an object", ["call"], "event: must be a JSON object"),
    ("missing field", {k: v for k, v in event("b1").items() if k != "start_date"},
     "start_date: is mandatory"),
    ("unknown status", event("b2", status=7), "status: is not a known status"),
    ("unknown entity", event("b3", entity_type=4), "entity_type: is not a known entity type"),
    ("malformed date", event("b4", start_date="yesterday"), "start_date: is not an ISO 8601"),
    ("binary without mime", event("b5", binary_content="https://r/x.wav",
                                  binary_content_size=1), "binary_content_mime: is mandatory"),
    ("binary without size", event("b6", binary_content="https://r/x.wav",
                                  binary_content_mime="audio/wav"), "binary_content_size"),
    ("not a phone call", event("b7", entity_type=2), "entity_type: is CHAT"),
    ("not voice", event("b8", media_type="email"), "media_type: is not 'voice'"),
]


@pytest.mark.parametrize(("name", "raw", "message"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_bad_input_is_journaled_not_sent(make_services, simulators, name, raw, message):
    svc = make_services()
    [received] = apply(svc, [raw])
    assert received.outcome == "rejected"
    assert message in received.error
    assert crm_requests(simulators) == []
    with svc.transaction() as s:
        [row] = s.scalars(select(JournalRow))
    assert row.outcome == "rejected"
    assert message in row.error
    assert json.loads(row.payload) == raw   # kept as received: nothing lost
    # ... and the next good event is processed as usual.
    apply(svc, [event("after-bad", Status.STOPPED)])
    assert len(crm_requests(simulators)) == 3


def test_invalid_json_text_is_journaled(make_services, simulators):
    svc = make_services()
    received, _ = handle_event(svc, '{"interaction_id": ')
    assert received.outcome == "rejected"
    assert "not valid JSON" in received.error


def test_secrets_never_reach_the_database(make_services, simulators):
    svc = make_services(caliq_api_key="wrong-secret-key-123", oracle_password="bad-pass-456")
    apply(svc, call_events("sec"))
    with svc.transaction() as s:
        rows = [*s.scalars(select(LegRow)), *s.scalars(select(RequestRow)),
                *s.scalars(select(JournalRow))]
        dump = " ".join(str(vars(r)) for r in rows)
        parked = list(s.scalars(select(LegRow.state).where(LegRow.state == "parked")))
    assert parked, "a 401 parks the leg"
    assert "wrong-secret-key-123" not in dump
    assert "bad-pass-456" not in dump


def test_random_orders_converge(make_services, simulators):
    svc = make_services()
    events = thread_events("r", consults=2)
    random.Random(99).shuffle(events)
    apply(svc, events)
    oracle, caliq = crm_state(simulators)
    assert len(by_media_item(oracle)) == 3
    assert len(oracle["phoneCalls"]) == 3
    assert len(caliq["interactions"]) == 3


def test_an_event_costs_one_transaction_plus_one_per_batch_of_steps(make_services, simulators):
    """Journal, lease, read and release share transactions (on PostgreSQL they are function
    calls and statements each committed by itself, with no BEGIN or COMMIT), a call's end,
    phoneCall and Caliq steps commit together, a task checks out one connection, and no
    statement is sent that changes nothing: a regression here is a slowdown."""
    from sqlalchemy import event as sa_event

    svc = make_services()
    engine = svc.sessions.kw["bind"]
    commits, statements, checkouts = [], [], []
    sa_event.listen(engine, "commit", lambda conn: commits.append(1))
    sa_event.listen(engine, "before_cursor_execute",   # BEGIN IMMEDIATE on SQLite not counted
                    lambda *args: statements.append(args[2]) if args[2][:5] != "BEGIN" else None)
    sa_event.listen(engine.pool, "checkout", lambda *args: checkouts.append(1))
    new, in_process, stopped = call_events("tx")

    def cost(raw) -> tuple[int, int, int, int]:
        for seen in (commits, statements, checkouts):
            seen.clear()
        _, driven = handle_event(svc, raw)
        return len(commits), len(statements), len(checkouts), driven.steps

    # SQLite: journal (thread + claim, call, journal: 3 statements) and read (1: events and
    # legs together); a batch of steps: its legs, thread and requests (3), but the last batch
    # writes the thread only if its top-level changed, and the release (1) rides with the last
    # transaction; a call's state is saved where it changed.
    # An IN_PROCESS that gives its thread no work takes no lease: no release either.
    # PostgreSQL: the journal's three statements and the thread's read are one function call,
    # and a batch's results with its release another; each of those and a lone release
    # commit by themselves (no BEGIN, no COMMIT).
    if engine.dialect.name == "postgresql":
        assert cost(new) == (0, 2, 1, 1)         # journal, results: a new thread is not read
        assert cost(in_process) == (0, 1, 1, 0)  # journal with the read, and nothing to do
        assert cost(stopped) == (0, 2, 1, 3)     # journal with the read, end + phoneCall + Caliq
        assert cost(stopped) == (0, 2, 1, 0)     # a duplicate: nothing sent or changed
    else:
        assert cost(new) == (2, 8, 1, 1)
        assert cost(in_process) == (1, 4, 1, 0)
        assert cost(stopped) == (2, 8, 1, 3)
        assert cost(stopped) == (1, 5, 1, 0)


def test_an_in_process_that_needs_nothing_takes_no_lease_and_one_that_does_is_driven(
        make_services, simulators):
    """IN_PROCESS takes no lease unless its thread turns out to need something: as its call's
    first event it creates the interaction all the same; after a failed create, once the
    back-off has passed, it drives the retry; before, it only says when the retry is due."""
    from datetime import timedelta

    from tests.integration.test_transactions import lease_of
    from worker.service import utcnow

    svc = make_services()
    first, _, _ = call_events("ip-first")
    _, in_process_first, _ = call_events("ip-first")
    _, driven = handle_event(svc, in_process_first)   # before its NEW: the interaction is due
    assert driven is not None and driven.steps == 1 and not driven.busy
    assert list(by_media_item(crm_state(simulators)[0])) == ["ip-first"]
    assert lease_of(svc, "ip-first") == (None, None)
    _, driven = handle_event(svc, first)              # NEW after: a no-op, as before
    assert driven is not None and driven.steps == 0

    new, in_process, _ = call_events("ip-retry")
    SimulatorAdmin(simulators.oracle_url).set_faults(
        [{"method": "POST", "path": r"/interactions$", "action": "503", "times": 1}])
    _, failed = handle_event(svc, new)
    assert failed is not None and failed.retry_at is not None   # a back-off, the create to do
    _, waiting = handle_event(svc, in_process)
    assert waiting is not None and waiting.steps == 0 and waiting.retry_at == failed.retry_at
    assert lease_of(svc, "ip-retry") == (None, None)              # read, not claimed
    svc.clock = lambda: utcnow() + timedelta(hours=1)           # the back-off has passed
    _, driven = handle_event(svc, in_process)                   # a duplicate, all the same
    assert driven is not None and driven.steps == 1 and driven.retry_at is None
    assert "ip-retry" in by_media_item(crm_state(simulators)[0])
    assert lease_of(svc, "ip-retry") == (None, None)


def test_a_step_is_kept_when_the_lease_was_taken_over_meanwhile(make_services, simulators):
    """The request was made: its result must be stored, or the heir could send it again."""
    from datetime import timedelta

    from worker.adapters import repository as repo
    from worker.service import utcnow

    svc = make_services(lease_seconds=30)
    create = svc.oracle.create_interaction

    def create_while_the_lease_is_taken_over(body, record):
        created = create(body, record)
        with svc.transaction() as s:   # the lease expired during the request; an heir took it
            s.execute(repo.update(repo.ThreadRow).values(lease_expires_at=utcnow()))
            assert repo.claim_thread(s, "lost", "heir", utcnow() + timedelta(seconds=1),
                                     timedelta(seconds=60))
        return created

    svc.oracle.create_interaction = create_while_the_lease_is_taken_over
    _, driven = handle_event(svc, call_events("lost")[0])
    assert driven.steps == 1   # and no more: the heir carries on
    with svc.transaction() as s:
        leg = s.scalars(select(LegRow).where(LegRow.interaction_id == "lost")).one()
        owner = s.scalar(select(repo.ThreadRow.lease_owner))
    assert (leg.leg, leg.state, leg.remote_id is not None) == ("oracle_interaction", "done", True)
    assert owner == "heir"


def test_a_threads_first_event_stands_for_the_thread_without_reading_it_back(make_services):
    """At version 1 a thread holds its first event and nothing else: the state built from that
    event must be exactly what reading the thread back returns."""
    import json
    from datetime import timedelta

    from worker.adapters import repository as repo
    from worker.domain.events import validate_event
    from worker.service import utcnow

    svc = make_services()
    new = call_events("first", thread_id="first-thread")[0]
    payload = json.dumps(new)
    with svc.connection_transaction() as s:
        _, key, claim, _ = repo.accept_event(
            s, validate_event(new), payload=payload, source="test", task_id=None, now=utcnow(),
            owner="me.1", lease=timedelta(seconds=30))
        assert claim is not None and claim.version == 1 and claim.fresh
        assert repo.first_event_thread(key, "first", payload) == repo.load_thread(s, key)


def test_a_call_stays_in_the_thread_it_joined_first(make_services, simulators):
    """The thread is chosen in the statement that bumps it: a known call's own thread, not the
    one a later event names."""
    from worker.adapters.models import ThreadRow

    svc = make_services()
    new, in_process, _ = call_events("moving", thread_id="thread-a")
    assert handle_event(svc, new)[0].thread_key == "thread-a"
    received, _ = handle_event(svc, {**in_process, "thread_id": "thread-b"})
    assert (received.outcome, received.thread_key) == ("accepted", "thread-a")
    with svc.transaction() as s:
        assert list(s.scalars(select(ThreadRow.thread_key))) == ["thread-a"]
