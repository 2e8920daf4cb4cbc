"""Every error class on every endpoint, over real HTTP and a real database.

Time is moved forward instead of slept through: the service's clock is the one seam.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.factories import call_events, thread_events
from worker.adapters import repository as repo
from worker.adapters.models import LegRow
from worker.domain.events import validate_event
from worker.domain.plan import LegState
from worker.sandbox.admin import SimulatorAdmin
from worker.service import drive_thread, handle_event, utcnow

ENDPOINTS = {
    "create interaction": ("POST", r"/interactions$"),
    "create child": ("POST", r"/childInteractions$"),
    "end interaction": ("PATCH", r"/interactions/\d+$"),
    "create phoneCall": ("POST", r"/phoneCalls$"),
    "create Caliq": ("POST", r"/InteractionCreate$"),
}
TRANSIENT = ["503", "429", "500", "502", "timeout", "drop", "drop_after_apply"]


def admin_for(sims, path: str) -> SimulatorAdmin:
    return SimulatorAdmin(sims.caliq_url if "InteractionCreate" in path else sims.oracle_url)


def settle(svc, keys, rounds: int = 12) -> None:
    """Drive threads again and again, moving the clock past every back-off, until done."""
    offset = timedelta(0)
    svc.clock = lambda: utcnow() + offset
    for _ in range(rounds):
        for key in keys:
            drive_thread(svc, key)
        offset += timedelta(minutes=10)


def assert_one_record_per_call(sims, calls) -> None:
    oracle = SimulatorAdmin(sims.oracle_url).state()
    caliq = SimulatorAdmin(sims.caliq_url).state()
    assert sorted(i["MediaItemId"] for i in oracle["interactions"]) == sorted(calls)
    assert sorted(p["ExternalSystemCallId"] for p in oracle["phoneCalls"]) == sorted(calls)
    assert sorted(c["UniqueID"] for c in caliq["interactions"]) == sorted(calls)
    assert all(i["StatusCd"] == "ORA_SVC_CLOSED" for i in oracle["interactions"])


def legs(svc) -> dict[tuple[str, str], LegRow]:
    with svc.transaction() as s:
        return {(r.interaction_id, r.leg): r for r in s.scalars(select(LegRow))}


@pytest.mark.parametrize("action", TRANSIENT)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_transient_faults_end_in_exactly_one_record(make_services, simulators, endpoint, action):
    method, path = ENDPOINTS[endpoint]
    admin_for(simulators, path).set_faults([
        {"method": method, "path": path, "action": action, "times": 2, "delay": 0.5,
         "retry_after": 1},
    ])
    svc = make_services(http_read_timeout=0.25)
    events = thread_events("root", consults=1)
    for event in events:
        handle_event(svc, event)
    settle(svc, ["root"])
    assert_one_record_per_call(simulators, ["root", "root-c1"])
    assert {r.state for r in legs(svc).values()} == {"done"}


def test_lost_answers_on_every_create_at_once(make_services, simulators):
    rule = {"action": "drop_after_apply", "times": 0}
    SimulatorAdmin(simulators.oracle_url).set_faults([
        {**rule, "method": "POST", "path": r"/interactions$", "times": 2},
        {**rule, "method": "POST", "path": r"/childInteractions$", "times": 1},
        {**rule, "method": "POST", "path": r"/phoneCalls$", "times": 2},
    ])
    SimulatorAdmin(simulators.caliq_url).set_faults([
        {**rule, "method": "POST", "path": "InteractionCreate", "times": 3},
    ])
    svc = make_services()
    for event in thread_events("root", consults=1):
        handle_event(svc, event)
    settle(svc, ["root"])
    assert_one_record_per_call(simulators, ["root", "root-c1"])
    gets = [r for r in SimulatorAdmin(simulators.oracle_url).requests_log()
            if r["method"] == "GET"]
    assert gets, "a lost answer is followed by a look-up, not a blind re-create"


@pytest.mark.parametrize("endpoint", ["create interaction", "end interaction", "create phoneCall"])
def test_permanent_oracle_error_fails_the_leg_and_caliq_goes_on(make_services, simulators,
                                                               endpoint):
    method, path = ENDPOINTS[endpoint]
    SimulatorAdmin(simulators.oracle_url).set_faults(
        [{"method": method, "path": path, "action": "400", "times": 0}])
    svc = make_services()
    for event in call_events("p1"):
        handle_event(svc, event)
    settle(svc, ["p1"], rounds=2)
    rows = legs(svc)
    failed = [r for r in rows.values() if r.state == "failed"]
    assert len(failed) == 1
    assert "HTTP 400" in failed[0].error and "Sandbox fault injected" in failed[0].error
    assert failed[0].error_kind == "permanent"
    assert failed[0].request_id, "the remote's request id is kept for support"
    assert failed[0].attempts == 1, "a permanent error is not retried"
    assert rows[("p1", "caliq")].state == "done"
    caliq = SimulatorAdmin(simulators.caliq_url).state()
    assert [c["UniqueID"] for c in caliq["interactions"]] == ["p1"]


def test_caliq_refusal_is_permanent_with_caliqs_message_and_oracle_goes_on(make_services,
                                                                         simulators):
    caliq = SimulatorAdmin(simulators.caliq_url)
    caliq.configure(customers=[999])  # 4242, the event's customer, is unknown to Caliq
    try:
        svc = make_services()
        for event in call_events("p2"):
            handle_event(svc, event)
        settle(svc, ["p2"], rounds=2)
    finally:
        caliq.configure(customers=None)
    rows = legs(svc)
    assert rows[("p2", "caliq")].state == "failed"
    assert rows[("p2", "caliq")].error.startswith("Caliq refused:")
    assert {rows[("p2", leg)].state for leg in
            ("oracle_interaction", "oracle_end", "oracle_phone_call")} == {"done"}


@pytest.mark.parametrize("status", ["401", "403"])
def test_auth_errors_park_the_leg(make_services, simulators, status):
    SimulatorAdmin(simulators.caliq_url).set_faults(
        [{"method": "POST", "path": "InteractionCreate", "action": status, "times": 0}])
    svc = make_services()
    for event in call_events("a1"):
        handle_event(svc, event)
    settle(svc, ["a1"], rounds=3)
    row = legs(svc)[("a1", "caliq")]
    assert (row.state, row.error_kind, row.attempts) == ("parked", "auth", 1)


def test_a_thread_read_back_holds_each_leg_as_stored(make_services, simulators):
    """Events and legs come back in one read; a leg's columns keep their types (SQLite holds
    datetimes as text)."""
    SimulatorAdmin(simulators.oracle_url).set_faults([{
        "method": "POST", "path": r"/interactions$", "action": "503", "times": 1,
        "retry_after": 7200,
    }])
    svc = make_services()
    _, driven = handle_event(svc, call_events("r1")[0])
    with svc.connection_transaction() as conn:
        thread = repo.load_thread(conn, driven.thread_key)
    [call] = thread.calls.values()
    leg = call.legs["oracle_interaction"]
    assert (leg.state, leg.attempts) == (LegState.RETRY, 1)
    assert isinstance(leg.next_attempt_at, datetime)
    assert leg.next_attempt_at == driven.retry_at
    assert "503" in (leg.error or "")
    assert call.event["interaction_id"] == "r1"


def test_long_maintenance_waits_in_the_database_for_the_sweep(make_services, simulators):
    SimulatorAdmin(simulators.oracle_url).set_faults([{
        "method": "POST", "path": r"/interactions$", "action": "503", "times": 1,
        "retry_after": 7200,
    }])
    svc = make_services()
    _, driven = handle_event(svc, call_events("m1")[0])
    now = utcnow()
    assert driven.retry_at >= now + timedelta(seconds=7100)
    with svc.transaction() as s:
        assert repo.threads_due(s, now + timedelta(minutes=5), timedelta(seconds=60), 10) == []
        due = repo.threads_due(s, now + timedelta(hours=2, minutes=1), timedelta(seconds=60), 10)
    assert due == ["m1"]


def test_retries_give_up_after_the_cap(make_services, simulators):
    SimulatorAdmin(simulators.oracle_url).set_faults(
        [{"method": "POST", "path": r"/interactions$", "action": "503", "times": 0}])
    svc = make_services(retry_max_attempts=3)
    handle_event(svc, call_events("g1")[0])
    settle(svc, ["g1"], rounds=5)
    row = legs(svc)[("g1", "oracle_interaction")]
    assert row.state == "failed"
    assert row.error.startswith("gave up after 3 attempts")


def test_only_one_of_many_concurrent_claims_wins(make_services, simulators):
    svc = make_services()
    handle_event(svc, call_events("race")[0])
    for _ in range(5):
        barrier = threading.Barrier(6)
        won = []

        def claim(owner: str, barrier=barrier, won=won) -> None:
            barrier.wait()
            with svc.transaction() as s:
                if repo.claim_thread(s, "race", owner, utcnow(), timedelta(seconds=30)):
                    won.append(owner)

        threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        with svc.transaction() as s:
            claim_row = repo.Claim("race", won[0], repo.thread_version(s, "race"), False)
            assert repo.release_thread(s, claim_row, claim_row.version)


def test_an_expired_lease_is_taken_over_once(make_services, simulators):
    svc = make_services()
    handle_event(svc, call_events("lease")[0])
    now = utcnow()
    with svc.transaction() as s:
        assert repo.claim_thread(s, "lease", "dead-worker", now, timedelta(seconds=1))
        assert repo.claim_thread(s, "lease", "other", now, timedelta(seconds=30)) is None
    later = now + timedelta(seconds=2)
    with svc.transaction() as s:
        takeover = repo.claim_thread(s, "lease", "heir", later, timedelta(seconds=30))
        assert takeover is not None and takeover.took_over
        assert repo.claim_thread(s, "lease", "late", later, timedelta(seconds=30)) is None


def test_an_event_takes_over_an_expired_lease_and_looks_up_before_creating(make_services,
                                                                          simulators):
    """The claim that rides with an event's version bump: a live lease is left alone, an
    expired one is taken over, and the heir looks the interaction up (the dead holder may have
    created it) instead of creating a second one."""
    svc = make_services()
    new, in_process, _ = call_events("heir")
    now = utcnow()
    with svc.connection_transaction() as s:   # a holder that never comes back
        assert repo.accept_event(s, validate_event(new), payload=json.dumps(new), source="test",
                                 task_id=None, now=now, owner="dead.1",
                                 lease=timedelta(seconds=30))[2] is not None
    _, driven = handle_event(svc, in_process)
    assert driven.busy                            # live: left to its holder
    svc.clock = lambda: utcnow() + timedelta(seconds=31)
    _, driven = handle_event(svc, in_process)     # expired: taken over
    assert driven.steps == 1 and not driven.busy
    oracle = SimulatorAdmin(simulators.oracle_url)
    assert [i["MediaItemId"] for i in oracle.state()["interactions"]] == ["heir"]
    assert [r["method"] for r in oracle.requests_log()] == ["GET", "POST"]


def test_an_event_during_a_run_is_not_dropped(make_services, simulators):
    """A worker that cannot get the lease leaves its event to the holder, who looks again."""
    svc = make_services()
    handle_event(svc, call_events("busy")[0])
    with svc.transaction() as s:
        claim = repo.claim_thread(s, "busy", "holder", utcnow(), timedelta(seconds=30))
        version = claim.version
    _, driven = handle_event(svc, call_events("busy")[2])   # STOPPED, thread busy
    assert driven.busy
    with svc.transaction() as s:
        assert not repo.release_thread(s, claim, version), "the version moved: keep going"
        s.execute(repo.update(repo.ThreadRow).values(lease_owner=None))
    drive_thread(svc, "busy")
    caliq = SimulatorAdmin(simulators.caliq_url).state()
    assert [c["UniqueID"] for c in caliq["interactions"]] == ["busy"]


def test_a_stopped_journaled_during_a_step_keeps_its_call_pending(make_services, simulators,
                                                                  monkeypatch):
    """A STOPPED that arrives while its thread's holder is mid-request marks the call pending:
    it has work again, and its message is acknowledged by a worker that found the thread busy.
    The holder's step result, worked out before (the call open), must not overwrite that: were
    the holder to die before it read the thread again, the sweep finds that work by `pending`."""
    from worker.adapters.models import CallRow

    svc, other = make_services(), make_services()   # the holder, and a worker beside it
    new, _, stopped = call_events("moved")
    create, save = svc.oracle.create_interaction, repo.save_step_and_release
    seen: list[str] = []

    def create_while_stopped_arrives(body, record):  # type: ignore[no-untyped-def]
        created = create(body, record)
        _, driven = handle_event(other, stopped)
        assert driven is not None and driven.busy
        return created

    def save_and_look(session, *args, **kwargs):  # type: ignore[no-untyped-def]
        # On the step's own connection, before the holder reads the thread again: what the
        # step's save (and its refused release) left.
        saved = save(session, *args, **kwargs)
        seen.append(session.execute(select(CallRow.sync_state).where(
            CallRow.interaction_id == "moved")).scalar_one())
        return saved

    monkeypatch.setattr(svc.oracle, "create_interaction", create_while_stopped_arrives)
    monkeypatch.setattr(repo, "save_step_and_release", save_and_look)
    handle_event(svc, new)
    assert seen[0] == "pending", seen
    assert_one_record_per_call(simulators, ["moved"])   # and the holder did the STOPPED's work
    assert all(leg.state == "done" for leg in legs(svc).values())


def test_a_worker_whose_lease_was_taken_over_stops(make_services, simulators):
    """Its release fails because the lease is someone else's now: it must stop, not spin."""
    svc = make_services(lease_seconds=2)
    handle_event(svc, call_events("stolen")[0])
    with svc.transaction() as s:
        claim = repo.claim_thread(s, "stolen", "slow", utcnow(), timedelta(seconds=2))
        assert repo.claim_thread(
            s, "stolen", "heir", utcnow() + timedelta(seconds=3), timedelta(seconds=30))
        assert not repo.release_thread(s, claim, claim.version)
        assert not repo.renew_lease(s, claim, utcnow(), timedelta(seconds=2))


def test_poison_guard_counts_only_redeliveries_and_quarantines_at_the_cap(make_services,
                                                                          simulators):
    from worker.adapters.models import DeliveryRow
    from worker.tasks import poison_guard

    svc = make_services(redelivery_cap=3)
    reasons: list[str] = []
    key = "m"

    def in_flight() -> int | None:
        with svc.transaction() as s:
            return s.scalar(select(DeliveryRow.in_flight).where(DeliveryRow.key == key))

    def not_worked_out() -> str:
        raise AssertionError("a first delivery needs no key")

    with poison_guard(svc, not_worked_out, reasons.append, redelivered=False) as poisoned:
        assert not poisoned
        assert in_flight() is None, "a first delivery writes nothing"
    # A redelivery that finishes takes its count back: it did not die.
    with poison_guard(svc, lambda: key, reasons.append, redelivered=True) as poisoned:
        assert not poisoned and in_flight() == 1
    assert in_flight() == 0
    # Two redeliveries that die (the count is left behind), after the first that died.
    for _ in range(2):
        with svc.transaction() as s:
            repo.begin_delivery(s, key, utcnow())
    with pytest.raises(RuntimeError), \
            poison_guard(svc, lambda: key, reasons.append, redelivered=True) as poisoned:
        assert poisoned
        raise RuntimeError("the work is skipped, the count is still taken back")
    assert reasons == ["quarantined: the worker died 3 times while processing this message "
                       "(cap 3)"]
    assert in_flight() == 2


def test_connection_pool_size_bounds_the_database_and_each_crm(make_services, simulators):
    svc = make_services(connection_pool_size=7)
    assert svc.sessions.kw["bind"].pool.size() == 7
    for client in (svc.oracle, svc.caliq):
        adapter = client.http.session.get_adapter(client.http.root)
        assert adapter.poolmanager.connection_pool_kw["maxsize"] == 7


def test_a_step_whose_answer_cannot_be_saved_keeps_the_lease_and_is_never_sent_twice(
        make_services, simulators, monkeypatch):
    """The database refuses the step's commit after the CRM created the record (a deadlock
    victim, a dropped connection): like a worker that died mid-request, the lease is kept, and
    whoever takes over after it expires finds the record instead of creating a second one."""
    from sqlalchemy.exc import OperationalError

    svc = make_services(lease_seconds=30)
    save_step = repo.save_step_and_release

    def refuse_once(*args, **kwargs):
        monkeypatch.setattr(repo, "save_step_and_release", save_step)
        raise OperationalError("COMMIT", {}, Exception("deadlock detected"))

    monkeypatch.setattr(repo, "save_step_and_release", refuse_once)
    new = call_events("unsaved")[0]
    with pytest.raises(OperationalError):
        handle_event(svc, new)
    with svc.transaction() as s:
        assert s.scalar(select(repo.ThreadRow.lease_owner)) is not None   # kept, not abandoned
    assert drive_thread(svc, "unsaved").busy                            # until it expires

    svc.clock = lambda: utcnow() + timedelta(seconds=31)
    driven = drive_thread(svc, "unsaved")
    oracle = SimulatorAdmin(simulators.oracle_url).state()
    assert [i["MediaItemId"] for i in oracle["interactions"]] == ["unsaved"]
    assert driven.steps == 1 and legs(svc)[("unsaved", "oracle_interaction")].state == "done"
    assert any(r["method"] == "GET" for r in SimulatorAdmin(simulators.oracle_url).requests_log())


def test_every_transaction_writes_the_thread_before_its_calls(make_services, simulators):
    """One lock order everywhere, or PostgreSQL finds deadlocks: a transaction that wrote a
    call's row and then waited for the thread's would deadlock with an event being journaled
    (thread, then call), and the loser's step result would be rolled back."""
    from sqlalchemy import event as sa_event

    svc = make_services()
    engine = svc.sessions.kw["bind"]
    transactions: list[list[str]] = [[]]
    functions = repo._statements_for(engine.dialect).functions

    def executed(conn, cursor, sql, *rest):  # type: ignore[no-untyped-def]
        # On PostgreSQL a function call runs several statements: those, in their order.
        run = next((f.statements for f in functions if f.name in sql), [sql])
        words = [statement.split()[:3] for statement in run]
        if getattr(conn.connection.dbapi_connection, "autocommit", None) is True:
            transactions[-1:] = [transactions[-1], words, []]   # a transaction by itself
        else:
            transactions[-1].extend(words)

    sa_event.listen(engine, "commit", lambda conn: transactions.append([]))
    sa_event.listen(engine, "before_cursor_execute", executed)
    for raw in thread_events("order", consults=2):
        handle_event(svc, raw)

    def first_write(statements: list[list[str]], table: str) -> int | None:
        return next((i for i, words in enumerate(statements)
                     if words[0] in ("INSERT", "UPDATE") and table in words), None)

    checked = 0
    for statements in transactions:
        thread, call = first_write(statements, "threads"), first_write(statements, "calls")
        if call is not None:
            checked += 1
            assert thread is not None and thread < call, statements
    assert checked >= 9   # every event's journal, and every drive's last step
    assert_one_record_per_call(simulators, ["order", "order-c1", "order-c2"])


def test_a_batch_of_steps_cut_short_is_recovered_without_a_duplicate(make_services, simulators,
                                                                      monkeypatch):
    """A call's end, phoneCall and Caliq steps are sent one after the other and committed
    together: if that commit never happens, the heir ends the interaction again (a PATCH),
    finds the phoneCall, and takes Caliq's duplicate answer as done: one record each."""
    from sqlalchemy.exc import OperationalError

    svc = make_services(lease_seconds=30)
    new, in_process, stopped = call_events("batch")
    handle_event(svc, new)
    handle_event(svc, in_process)
    save_step = repo.save_step_and_release

    def refuse_once(*args, **kwargs):
        monkeypatch.setattr(repo, "save_step_and_release", save_step)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(repo, "save_step_and_release", refuse_once)
    with pytest.raises(OperationalError):
        handle_event(svc, stopped)
    svc.clock = lambda: utcnow() + timedelta(seconds=31)
    driven = drive_thread(svc, "batch")
    assert driven.steps == 3
    assert_one_record_per_call(simulators, ["batch"])
    assert all(leg.state == "done" for leg in legs(svc).values())


def test_a_call_first_seen_twice_at_once_under_two_threads_is_read_back(make_services,
                                                                         database_url):
    """Two first events of one call, naming different threads, race: the loser bumped (and
    created) the other thread before the winner's call row committed. Its thread is not the
    call's, so it must not be taken as holding the event: it is read back, and is empty."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time: the two cannot interleave")
    svc = make_services()
    first, second = call_events("twice", thread_id="thread-x")[0], \
        call_events("twice", thread_id="thread-y")[0]

    def accept(conn, raw, owner):
        return repo.accept_event(conn, validate_event(raw), payload=json.dumps(raw),
                                 source="test", task_id=None, now=utcnow(), owner=owner,
                                 lease=timedelta(seconds=30))

    results: list[tuple] = []
    with svc.engine.connect() as winner:
        tx = winner.begin()
        accept(winner, first, "winner.1")             # the call row written, not committed

        def loser() -> None:
            with svc.connection_transaction() as conn:
                results.append(accept(conn, second, "loser.1"))   # waits on the call row

        racer = threading.Thread(target=loser)
        racer.start()
        racer.join(0.5)
        assert racer.is_alive()                        # blocked behind the winner
        tx.commit()
    racer.join(10)
    _, thread_key, claim, _ = results[0]
    assert (thread_key, claim.version, claim.fresh) == ("thread-y", 1, False)
    with svc.connection_transaction() as conn:
        assert repo.load_thread(conn, "thread-y").calls == {}
        assert list(repo.load_thread(conn, "thread-x").calls) == ["twice"]
