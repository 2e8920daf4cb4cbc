"""The sandbox simulators over real HTTP: Oracle and Caliq behaviour, faults and admin endpoints."""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from worker.sandbox.admin import SimulatorAdmin
from worker.sandbox.server import Simulators

API = "/crmRestApi/resources/11.13.18.05"
AUTH = ("sandbox", "sandbox-password")
V4 = {"REST-Framework-Version": "4"}


@pytest.fixture(scope="module")
def running() -> Iterator[Simulators]:
    with Simulators() as sims:
        yield sims


@pytest.fixture()
def sims(running: Simulators) -> Simulators:
    SimulatorAdmin(running.oracle_url).reset()
    SimulatorAdmin(running.caliq_url).reset()
    return running


@pytest.fixture()
def oracle(sims: Simulators) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = AUTH
        yield session


def url(sims: Simulators, path: str) -> str:
    return f"{sims.oracle_url}{API}/{path}"


def create(oracle: requests.Session, sims: Simulators, **fields: object) -> dict:
    response = oracle.post(url(sims, "interactions"), json=fields, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()


def caliq_body(**overrides: object) -> dict:
    body = {
        "apiKey": "sandbox-key",
        "ChannelID": 1,
        "CustomerID": 42,
        "UniqueID": "call-1",
        "Kind": "C",
        "ContactedBy": "E100",
        "ContactedFirstName": "Ada",
        "ContactedSurname": "Lovelace",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def caliq_create(sims: Simulators, body: dict) -> requests.Response:
    return requests.post(f"{sims.caliq_url}/api/v1/InteractionCreate", json=body, timeout=5)


# --- Oracle: auth ---------------------------------------------------------------------------
def test_oracle_auth_basic_bearer_and_401(sims: Simulators) -> None:
    root = url(sims, "")
    assert requests.get(root, auth=AUTH, timeout=5).status_code == 200
    bearer = {"Authorization": "Bearer sandbox-token"}
    assert requests.get(root, headers=bearer, timeout=5).status_code == 200
    for kwargs in ({}, {"auth": ("sandbox", "wrong")}, {"headers": {"Authorization": "Bearer x"}}):
        response = requests.get(url(sims, "interactions"), timeout=5, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 401
    denied = requests.post(url(sims, "interactions"), json={}, headers=V4, timeout=5)
    assert denied.status_code == 401
    assert denied.json()["status"] == "401"
    assert sims.oracle_state.snapshot()["interactions"] == []


# --- Oracle: interactions -------------------------------------------------------------------
def test_create_interaction_assigns_ids_and_defaults(oracle: requests.Session, sims: Simulators):
    response = oracle.post(url(sims, "interactions"), json={"Description": "call"}, timeout=5)
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/vnd.oracle.adf.resourceitem+json"
    item = response.json()
    assert item["InteractionId"] == 300100000000001
    assert item["ParentInteractionId"] == item["InteractionId"]
    assert item["TopLevelFlag"] == "true"
    assert (item["StatusCd"], item["DirectionCd"], item["StripeCd"]) == (
        "ORA_SVC_OPEN",
        "ORA_SVC_INBOUND",
        "ORA_SVC_CRM",
    )
    assert response.headers["Location"].endswith(f"{API}/interactions/{item['InteractionId']}")
    assert {link["rel"] for link in item["links"]} >= {"self", "canonical", "child"}
    assert create(oracle, sims)["InteractionId"] == 300100000000002
    fetched = oracle.get(response.headers["Location"], timeout=5)
    assert fetched.status_code == 200 and fetched.json()["Description"] == "call"


def test_patch_interaction_and_404s(oracle: requests.Session, sims: Simulators) -> None:
    iid = create(oracle, sims, Description="before")["InteractionId"]
    patched = oracle.patch(
        url(sims, f"interactions/{iid}"),
        json={"Description": "after", "StatusCd": "ORA_SVC_CLOSED"},
    )
    assert patched.status_code == 200
    assert patched.json()["Description"] == "after"
    state = sims.oracle_state.snapshot()["interactions"][0]
    assert (state["Description"], state["StatusCd"]) == ("after", "ORA_SVC_CLOSED")
    assert oracle.get(url(sims, "interactions/999"), timeout=5).status_code == 404
    assert oracle.patch(url(sims, "interactions/999"), json={"Description": "x"}).status_code == 404
    reparent = oracle.patch(url(sims, f"interactions/{iid}"), json={"ParentInteractionId": 1})
    assert reparent.status_code == 400 and "ParentInteractionId" in reparent.text


def test_child_interactions(oracle: requests.Session, sims: Simulators) -> None:
    parent = create(oracle, sims)["InteractionId"]
    response = oracle.post(
        url(sims, f"interactions/{parent}/child/childInteractions"),
        json={"Description": "leg 1"},
        timeout=5,
    )
    assert response.status_code == 201
    child = response.json()
    assert child["ParentInteractionId"] == parent and child["TopLevelFlag"] == "false"
    assert child["InteractionId"] != parent
    listed = oracle.get(url(sims, f"interactions/{parent}/child/childInteractions")).json()
    assert [c["InteractionId"] for c in listed["items"]] == [child["InteractionId"]]
    # Children are interactions in their own right: GET and PATCH by their own id.
    cid = child["InteractionId"]
    patched = oracle.patch(url(sims, f"interactions/{cid}"), json={"Description": "leg 1 done"})
    assert patched.status_code == 200 and patched.json()["ParentInteractionId"] == parent


def test_child_of_missing_parent_is_404(oracle: requests.Session, sims: Simulators) -> None:
    path = url(sims, "interactions/300100000009999/child/childInteractions")
    response = oracle.post(path, json={"Description": "x"}, headers=V4, timeout=5)
    assert response.status_code == 404
    detail = response.json()["o:errorDetails"][0]
    assert "300100000009999" in detail["detail"]
    assert sims.oracle_state.snapshot()["interactions"] == []


@pytest.mark.parametrize(
    ("body", "attribute", "problem"),
    [
        ({"Descriptionx": "x"}, "Descriptionx", "not found"),
        ({"Description": "d" * 1001}, "Description", "maximum length 1000"),
        ({"MediaItemId": "m" * 256}, "MediaItemId", "maximum length 255"),
        ({"InteractionId": 5}, "InteractionId", "read-only"),
        ({"ChannelId": "12"}, "ChannelId", "integer"),
        ({"StartTime": "yesterday"}, "StartTime", "ISO-8601"),
        ({"EndInteractionFlag": "Y"}, "EndInteractionFlag", "boolean"),
    ],
)
def test_invalid_interaction_body_names_attribute(
    oracle: requests.Session, sims: Simulators, body: dict, attribute: str, problem: str
) -> None:
    v4 = oracle.post(url(sims, "interactions"), json=body, headers=V4, timeout=5)
    assert v4.status_code == 400
    assert v4.headers["Content-Type"] == "application/vnd.oracle.adf.error+json"
    error = v4.json()
    assert error["title"] == "Bad Request" and error["status"] == "400"
    detail = error["o:errorDetails"][0]
    assert detail["o:errorPath"] == attribute
    assert attribute in detail["detail"] and problem in detail["detail"]
    legacy = oracle.post(url(sims, "interactions"), json=body, timeout=5)
    assert legacy.status_code == 400
    assert legacy.headers["Content-Type"].startswith("text/plain")
    assert attribute in legacy.text and problem in legacy.text
    assert sims.oracle_state.snapshot()["interactions"] == []


def test_max_length_boundary_is_accepted(oracle: requests.Session, sims: Simulators) -> None:
    item = create(oracle, sims, Description="d" * 1000, QueueNumber="q" * 30)
    assert len(item["Description"]) == 1000


def test_finder_and_q_lookups(oracle: requests.Session, sims: Simulators) -> None:
    first = create(oracle, sims, MediaItemId="conn-1", OriginalSystemReference="gen-1")
    create(oracle, sims, MediaItemId="conn-2", OriginalSystemReference="gen-2")
    finder = {"finder": "InteractionRowFinderByMediaItemId;BindMediaItemId=conn-1"}
    found = oracle.get(url(sims, "interactions"), params=finder, timeout=5).json()
    assert [i["InteractionId"] for i in found["items"]] == [first["InteractionId"]]
    assert found["count"] == 1 and found["hasMore"] is False
    for q in (
        "OriginalSystemReference=gen-1",
        "OriginalSystemReference='gen-1'",
        "MediaItemId=conn-1;StatusCd=ORA_SVC_OPEN",
        "MediaItemId=conn-1 and DirectionCd=ORA_SVC_INBOUND",
    ):
        items = oracle.get(url(sims, "interactions"), params={"q": q, "onlyData": "true"}).json()
        assert [i["InteractionId"] for i in items["items"]] == [first["InteractionId"]], q
        assert "links" not in items["items"][0]
    none = oracle.get(url(sims, "interactions"), params={"q": "MediaItemId=nope"}).json()
    assert none["count"] == 0 and none["items"] == []
    bad_q = oracle.get(url(sims, "interactions"), params={"q": "Nope=1"}, headers=V4)
    assert bad_q.status_code == 400 and "Nope" in bad_q.json()["o:errorDetails"][0]["detail"]
    bad_finder = oracle.get(url(sims, "interactions"), params={"finder": "NoSuchFinder;X=1"})
    assert bad_finder.status_code == 400


def test_collection_paging(oracle: requests.Session, sims: Simulators) -> None:
    ids = [create(oracle, sims)["InteractionId"] for _ in range(3)]
    page = oracle.get(url(sims, "interactions"), params={"limit": 2, "offset": 1}).json()
    assert [i["InteractionId"] for i in page["items"]] == ids[1:]
    assert (page["limit"], page["offset"], page["hasMore"]) == (2, 1, False)
    head = oracle.get(url(sims, "interactions"), params={"limit": 1}).json()
    assert head["count"] == 1 and head["hasMore"] is True


# --- Oracle: phone calls --------------------------------------------------------------------
def transcript(n: int) -> list[dict]:
    return [
        {
            "MessageContent": base64.b64encode(f"line {i} – é".encode()).decode(),
            "RoleCd": "AGENT" if i % 2 else "CUSTOMER",
            "PostedByDisplayName": f"speaker {i}",
        }
        for i in range(n)
    ]


def test_phone_call_with_transcript_round_trip(oracle: requests.Session, sims: Simulators) -> None:
    iid = create(oracle, sims)["InteractionId"]
    body = {
        "InteractionId": iid,
        "ExternalSystemCallId": "ext-1",
        "PhoneNumber": "+15550100",
        "TranscriptMessage": transcript(5),
    }
    response = oracle.post(url(sims, "phoneCalls"), json=body, timeout=5)
    assert response.status_code == 201, response.text
    call = response.json()
    assert call["InteractionId"] == iid and call["CallId"]
    message_ids = [m["MessageId"] for m in call["TranscriptMessage"]]
    assert len(set(message_ids)) == 5

    found = oracle.get(url(sims, "phoneCalls"), params={"q": "ExternalSystemCallId=ext-1"}).json()
    assert [c["CallId"] for c in found["items"]] == [call["CallId"]]
    item = oracle.get(url(sims, f"phoneCalls/{call['CallId']}"), timeout=5)
    assert item.status_code == 200 and item.json()["ExternalSystemCallId"] == "ext-1"
    listed = oracle.get(url(sims, f"phoneCalls/{call['CallId']}/child/TranscriptMessage")).json()
    decoded = [base64.b64decode(m["MessageContent"]).decode() for m in listed["items"]]
    assert decoded == [f"line {i} – é" for i in range(5)]
    assert [m["MessageId"] for m in listed["items"]] == message_ids
    assert all(m["CallId"] == call["CallId"] for m in listed["items"])
    assert oracle.get(url(sims, "phoneCalls/1"), timeout=5).status_code == 404
    # Each write's login id is Oracle's 32 hex digits, and no two writes share one.
    logins = [call["LastUpdateLogin"], *(m["LastUpdateLogin"] for m in call["TranscriptMessage"]),
              create(oracle, sims)["LastUpdateLogin"]]
    assert all(re.fullmatch(r"[0-9A-F]{32}", login) for login in logins)
    assert len(set(logins)) == len(logins) == 7


@pytest.mark.parametrize(
    ("mutate", "attribute"),
    [
        (lambda b: b.pop("InteractionId"), "InteractionId"),
        (lambda b: b.update(InteractionId=123), "InteractionId"),
        (lambda b: b.update(PhoneNumber="1" * 31), "PhoneNumber"),
        (lambda b: b.update(CallId=5), "CallId"),
        (
            lambda b: b["TranscriptMessage"][3].update(RoleCd="R" * 31),
            "TranscriptMessage[3].RoleCd",
        ),
        (lambda b: b["TranscriptMessage"][1].update(Speaker="x"), "TranscriptMessage[1].Speaker"),
        (
            lambda b: b["TranscriptMessage"][0].update(MessageContent="not base64!"),
            "TranscriptMessage[0].MessageContent",
        ),
    ],
)
def test_invalid_phone_call_rejected(
    oracle: requests.Session, sims: Simulators, mutate, attribute: str
) -> None:
    iid = create(oracle, sims)["InteractionId"]
    body = {"InteractionId": iid, "TranscriptMessage": transcript(4)}
    mutate(body)
    response = oracle.post(url(sims, "phoneCalls"), json=body, headers=V4, timeout=5)
    assert response.status_code == 400
    detail = response.json()["o:errorDetails"][0]
    assert detail["o:errorPath"] == attribute and attribute in detail["detail"]
    assert sims.oracle_state.snapshot()["phoneCalls"] == []


# --- Caliq ----------------------------------------------------------------------------------
def test_caliq_create_ok_and_duplicate(sims: Simulators) -> None:
    ok = caliq_create(sims, caliq_body())
    assert ok.status_code == 200
    assert ok.json() == {"InteractionAddData": {"OK": True, "InteractionCreateIssues": []}}
    stored = sims.caliq_state.snapshot()["interactions"]
    assert len(stored) == 1 and stored[0]["UniqueID"] == "call-1" and "apiKey" not in stored[0]
    again = caliq_create(sims, caliq_body(Notes="retry")).json()["InteractionAddData"]
    assert again["OK"] is False
    assert [i["Message"] for i in again["InteractionCreateIssues"]] == [
        "Interaction with this UniqueID already exists"
    ]
    assert len(sims.caliq_state.snapshot()["interactions"]) == 1


def test_caliq_auth_and_bad_json(sims: Simulators) -> None:
    assert caliq_create(sims, caliq_body(apiKey="wrong")).status_code == 401
    assert (
        caliq_create(sims, {k: v for k, v in caliq_body().items() if k != "apiKey"}).status_code
        == 401
    )
    garbled = requests.post(
        f"{sims.caliq_url}/api/v1/InteractionCreate",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert garbled.status_code == 400
    for endpoint in ("Channel", "Employee", "Pulse"):
        bad = requests.post(f"{sims.caliq_url}/api/v1/{endpoint}", json={"apiKey": "x"})
        assert bad.status_code == 401, endpoint
    assert sims.caliq_state.snapshot()["interactions"] == []


@pytest.mark.parametrize(
    ("overrides", "extra"),
    [
        ({"ChannelID": None}, "ChannelID"),
        ({"ChannelID": "1"}, "ChannelID"),
        ({"ChannelID": 99}, "99"),
        ({"CustomerID": None}, "CustomerID"),
        ({"UniqueID": None}, "UniqueID"),
        ({"Kind": "X"}, "X"),
        ({"ContactedBy": None}, "ContactedBy"),
        ({"ContactedSurname": None}, "ContactedSurname"),
        ({"AccountNo": "A" * 11}, "AccountNo"),
        ({"ContactedFirstName": "n" * 51}, "ContactedFirstName"),
        ({"FollowUpBy": "E" * 11}, "FollowUpBy"),
        ({"Colour": "red"}, "Colour"),
    ],
)
def test_caliq_issues(sims: Simulators, overrides: dict, extra: str) -> None:
    data = caliq_create(sims, caliq_body(**overrides)).json()["InteractionAddData"]
    assert data["OK"] is False
    assert extra in [issue["ExtraData"] for issue in data["InteractionCreateIssues"]]
    assert sims.caliq_state.snapshot()["interactions"] == []


def test_caliq_contact_id_replaces_names_and_account_no_replaces_customer(sims: Simulators):
    body = caliq_body(
        ContactID=7,
        ContactedFirstName=None,
        ContactedSurname=None,
        CustomerID=None,
        AccountNo="ACC-1",
    )
    assert caliq_create(sims, body).json()["InteractionAddData"]["OK"] is True


def test_caliq_known_customers_and_lookups(sims: Simulators) -> None:
    admin = SimulatorAdmin(sims.caliq_url)
    admin.configure(customers=[42, "ACC-9"])
    assert caliq_create(sims, caliq_body()).json()["InteractionAddData"]["OK"] is True
    unknown = caliq_create(sims, caliq_body(UniqueID="u2", CustomerID=43)).json()
    assert unknown["InteractionAddData"]["OK"] is False
    admin.configure(customers=None)
    key = {"apiKey": "sandbox-key"}
    channels = requests.post(f"{sims.caliq_url}/api/v1/Channel", json=key, timeout=5).json()
    assert channels == {
        "ChannelList": [{"ID": 1, "Description": "Phone"}, {"ID": 2, "Description": "Email"}]
    }
    employees = requests.post(f"{sims.caliq_url}/api/v1/Employee", json=key, timeout=5).json()
    assert employees["EmployeeList"][0]["ID"] == "E100"
    pulse = requests.post(f"{sims.caliq_url}/api/v1/Pulse", json=key, timeout=5).json()["Pulse"]
    assert 0 <= pulse < 86400


# --- faults, latency and admin --------------------------------------------------------------
def test_fault_503_with_retry_after_is_not_applied(oracle: requests.Session, sims: Simulators):
    admin = SimulatorAdmin(sims.oracle_url)
    admin.set_faults(
        [{"method": "POST", "path": "/interactions$", "action": "503", "retry_after": 4}]
    )
    failed = oracle.post(url(sims, "interactions"), json={}, timeout=5)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "4"
    assert sims.oracle_state.snapshot()["interactions"] == []
    assert oracle.post(url(sims, "interactions"), json={}, timeout=5).status_code == 201
    log = admin.requests_log()
    assert [(e["status"], e["fault"]) for e in log] == [(503, "503"), (201, None)]


@pytest.mark.parametrize("action", ["429", "500", "502", "400", "401", "403", "404"])
def test_status_faults_on_caliq(sims: Simulators, action: str) -> None:
    SimulatorAdmin(sims.caliq_url).set_faults([{"path": "InteractionCreate", "action": action}])
    response = caliq_create(sims, caliq_body())
    assert response.status_code == int(action)
    assert ("Retry-After" in response.headers) == (action == "429")
    assert sims.caliq_state.snapshot()["interactions"] == []
    assert caliq_create(sims, caliq_body()).json()["InteractionAddData"]["OK"] is True


def test_timeout_fault_makes_client_time_out(sims: Simulators) -> None:
    SimulatorAdmin(sims.caliq_url).set_faults(
        [{"path": "InteractionCreate", "action": "timeout", "delay": 1.0}]
    )
    with pytest.raises(requests.Timeout):
        requests.post(f"{sims.caliq_url}/api/v1/InteractionCreate", json=caliq_body(), timeout=0.3)
    time.sleep(1.0)  # let the server finish its sleep and answer (nobody listens)
    assert sims.caliq_state.snapshot()["interactions"] == []
    assert SimulatorAdmin(sims.caliq_url).requests_log()[0]["status"] == 503


def test_drop_after_apply_loses_answer_but_keeps_record(oracle: requests.Session, sims: Simulators):
    iid = create(oracle, sims)["InteractionId"]  # warms the pooled keep-alive connection
    SimulatorAdmin(sims.oracle_url).set_faults(
        [{"path": "phoneCalls", "action": "drop_after_apply"}]
    )
    with pytest.raises(requests.ConnectionError):
        oracle.post(
            url(sims, "phoneCalls"),
            json={"InteractionId": iid, "ExternalSystemCallId": "lost"},
            timeout=5,
        )
    calls = sims.oracle_state.snapshot()["phoneCalls"]
    assert [c["ExternalSystemCallId"] for c in calls] == ["lost"]
    # The same session keeps working afterwards (a fresh connection replaces the dropped one).
    again = oracle.get(url(sims, "phoneCalls"), params={"q": "ExternalSystemCallId=lost"})
    assert again.status_code == 200 and again.json()["count"] == 1


def test_drop_without_apply(sims: Simulators) -> None:
    SimulatorAdmin(sims.caliq_url).set_faults([{"path": "InteractionCreate", "action": "drop"}])
    with pytest.raises(requests.ConnectionError):
        caliq_create(sims, caliq_body())
    assert sims.caliq_state.snapshot()["interactions"] == []


def test_latency_and_admin_reset(oracle: requests.Session, sims: Simulators) -> None:
    admin = SimulatorAdmin(sims.oracle_url)
    assert admin.configure(latency_ms=150)["latency_ms"] == 150
    started = time.monotonic()
    create(oracle, sims)
    assert time.monotonic() - started >= 0.15
    admin.configure(latency_ms=0)
    admin.set_faults([{"path": "x", "action": "500", "times": 0}])
    assert admin.state()["interactions"] and admin.requests_log()
    admin.reset()
    assert admin.state() == {"interactions": [], "phoneCalls": []}
    assert admin.requests_log() == [] and admin.faults() == []
    with pytest.raises(requests.HTTPError):
        admin.set_faults([{"action": "teapot"}])


def test_every_reply_has_its_own_request_id_and_its_whole_body(sims: Simulators) -> None:
    """Many threads' kept-alive connections at once: ids never repeat, and every body arrives
    whole through the simulators' buffered writes. (That a reply leaves in one send was
    counted with strace, see docs/performance-history.md; a test cannot see TCP segments.)"""
    from concurrent.futures import ThreadPoolExecutor

    def query(n: int) -> list[str]:
        with requests.Session() as session:
            replies = [session.get(url(sims, "interactions"), auth=AUTH,
                                   params={"q": f"MediaItemId=m{n}-{k}"}) for k in range(10)]
        assert all(r.status_code == 200 and r.json()["count"] == 0 for r in replies)
        return [r.headers["X-Request-Id"] for r in replies]

    with ThreadPoolExecutor(8) as pool:
        ids = [i for batch in pool.map(query, range(8)) for i in batch]
    assert len(ids) == 80 and len(set(ids)) == 80


# --- the standalone simulator process (what the benchmark runs) -----------------------------
def test_standalone_process_reads_request_headers_as_the_in_process_one() -> None:
    """`python -m worker.sandbox.server` parses request headers without the email package
    (worker.sandbox.http_headers): auth, the framework version and a folded line still reach
    the simulator as http.client would have read them."""
    from worker.bench_env import SimulatorProcess

    process = SimulatorProcess(latency_ms=0).start()
    try:
        root = f"{process.oracle_url}{API}"
        created = requests.post(f"{root}/interactions", json={"StatusCd": "ORA_SVC_OPEN"},
                                auth=AUTH, timeout=5)
        assert created.status_code == 201, created.text
        denied = requests.post(f"{root}/interactions", json={}, headers=V4, timeout=5)
        assert denied.status_code == 401 and denied.json()["status"] == "401"
        # A folded Authorization line goes to the standard parser: the same answer as from
        # the in-process simulators, which use http.client's parser throughout.
        folded = (b"GET " + API.encode() + b"/interactions HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Basic\r\n c2FuZGJveDpzYW5kYm94LXBhc3N3b3Jk\r\n"
                  b"Connection: close\r\n\r\n")
        answer = _raw_exchange(process.oracle_port, folded)
        with Simulators() as in_process:
            port = int(in_process.oracle_url.rsplit(":", 1)[1])
            assert _status_line(answer) == _status_line(_raw_exchange(port, folded))
        assert re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", answer)
    finally:
        process.stop()


def _raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def _status_line(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]
