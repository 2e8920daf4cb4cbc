"""Rendering payloads from a Genesys event with the shipped mapping files."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest

from worker.mapping import Mappings, PayloadError, load_mappings
from worker.mapping.fit import TRUNCATION_MARKER

REPO_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
SETTINGS = {"oracle_phone_channel_id": 1000, "caliq_channel_id": 7}


@pytest.fixture(scope="module")
def m() -> Mappings:
    return load_mappings(REPO_MAPPINGS, SETTINGS)


def event(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "interaction_id": "00F0AB12CD34EF56",
        "status": 2,
        "entity_type": 3,
        "type": "Inbound",
        "media_type": "voice",
        "owner_id": 101,
        "creator_app_id": 5,
        "customer_id": "C1",
        "start_date": "2026-11-24T10:15:00.000Z",
        "phone_number": "tel:+44 20 7946 0958",
        "subject": "Billing question",
        "text": "Agent: Hello\r\nCustomer: card 4111 1111 1111 1111\r\nthanks",
        "udata": {
            "CaliqAccountNo": "ACC1",
            "FirstName": "Jo",
            "LastName": "Bloggs",
            "OracleAccountPartyId": "300100000000042",
        },
    }
    base.update(over)
    return base


def test_oracle_interaction_open(m: Mappings) -> None:
    body = m.oracle_interaction(event(), thread_key="T1", closed=False)
    assert body == {
        "OriginalSystemReference": "00F0AB12CD34EF56",
        "MediaItemId": "00F0AB12CD34EF56",
        "DirectionCd": "ORA_SVC_INBOUND",
        "StartTime": "2026-11-24T10:15:00+00:00",
        "Description": "Billing question",
        "AccountPartyId": 300100000000042,
        "OwnerResourceId": 300100000001101,
        "ChannelId": 1000,
        "ChannelTypeCd": "ORA_SVC_PHONE",
    }
    assert None not in body.values()


def test_missing_values_omitted_and_default_used(m: Mappings) -> None:
    body = m.oracle_interaction(
        event(subject="", udata={}, owner_id=999, type="Outbound"), thread_key="T", closed=False
    )
    assert body["Description"] == "Phone call"
    assert body["DirectionCd"] == "ORA_SVC_OUTBOUND"
    assert "AccountPartyId" not in body and "OwnerResourceId" not in body


def test_channel_setting_none_omits_channel() -> None:
    m = load_mappings(REPO_MAPPINGS, {"oracle_phone_channel_id": None, "caliq_channel_id": 1})
    assert "ChannelId" not in m.oracle_interaction(event(), thread_key="T", closed=False)


def test_udata_wins_over_agents_csv(m: Mappings) -> None:
    ev = event(udata={**event()["udata"], "CaliqEmployeeID": "E777", "OracleResourceId": "55"})
    assert m.caliq_interaction(ev)["ContactedBy"] == "E777"
    assert m.oracle_interaction(ev, thread_key="T", closed=False)["OwnerResourceId"] == 55
    assert m.caliq_interaction(event())["ContactedBy"] == "E101"


def test_long_subject_truncated_and_redacted(m: Mappings) -> None:
    subject = "card 4111111111111111 " + "x" * 1200
    body = m.oracle_interaction(event(subject=subject), thread_key="T", closed=False)
    assert len(body["Description"]) <= 1000
    assert body["Description"].endswith(TRUNCATION_MARKER)
    assert body["Description"].startswith("card [card ****1111] ")


def test_end_with_end_date(m: Mappings) -> None:
    body = m.oracle_interaction_end(
        event(status=3, end_date="2026-11-24T10:20:00.000Z"), thread_key="T"
    )
    assert body["EndTime"] == "2026-11-24T10:20:00+00:00"
    assert body["StatusCd"] == "ORA_SVC_CLOSED"
    assert "EndInteractionFlag" not in body


def test_end_from_start_plus_duration(m: Mappings) -> None:
    body = m.oracle_interaction_end(event(status=3, duration=125), thread_key="T")
    assert body["EndTime"] == "2026-11-24T10:17:05+00:00"


def test_end_without_any_end_uses_flag(m: Mappings) -> None:
    body = m.oracle_interaction_end(event(status=3), thread_key="T")
    assert "EndTime" not in body
    assert body["EndInteractionFlag"] is True
    assert body["StatusCd"] == "ORA_SVC_CLOSED"


def test_closed_create_includes_closed_section(m: Mappings) -> None:
    body = m.oracle_interaction(event(duration=5), thread_key="T", closed=True)
    assert body["StatusCd"] == "ORA_SVC_CLOSED" and "EndTime" in body


def test_thread_placeholder(m: Mappings) -> None:
    body = m.oracle_thread_placeholder("ROOT-1", event(type="Internal"))
    assert body == {
        "OriginalSystemReference": "ROOT-1",
        "MediaItemId": "ROOT-1",
        "DirectionCd": "ORA_SVC_INBOUND",
        "StartTime": "2026-11-24T10:15:00+00:00",
        "Description": "Conversation thread ROOT-1",
        "AccountPartyId": 300100000000042,
        "ChannelId": 1000,
        "ChannelTypeCd": "ORA_SVC_PHONE",
    }


def test_phone_call_with_transcript(m: Mappings) -> None:
    body = m.oracle_phone_call(
        event(binary_content="https://rec.example/1.wav", binary_content_mime="audio/wav"),
        interaction_id=300100000000777,
    )
    assert body["InteractionId"] == 300100000000777
    assert body["ExternalSystemCallId"] == "00F0AB12CD34EF56"
    assert body["PhoneNumber"] == "+442079460958"
    assert body["RecordingURL"] == "https://rec.example/1.wav"
    assert body["RecordingFormat"] == "audio/wav"
    messages = body["TranscriptMessage"]
    assert [(x["PostedByDisplayName"], x["RoleCd"]) for x in messages] == [
        ("Agent", "AGENT"),
        ("Customer", "CUSTOMER"),
    ]
    second = base64.b64decode(messages[1]["MessageContent"]).decode()
    assert second == "card [card ****1111]\nthanks"  # redacted before encoding


def test_phone_call_without_text_has_no_transcript(m: Mappings) -> None:
    body = m.oracle_phone_call(event(text=None), interaction_id=1)
    assert "TranscriptMessage" not in body


def test_unknown_speaker_gets_default_role(m: Mappings) -> None:
    body = m.oracle_phone_call(event(text="Supervisor: hi"), interaction_id=1)
    assert body["TranscriptMessage"][0]["RoleCd"] == "CUSTOMER"


def test_caliq_interaction(m: Mappings) -> None:
    body = m.caliq_interaction(event(duration=205))
    assert "apiKey" not in body
    assert body["UniqueID"] == "00F0AB12CD34EF56"
    assert body["Kind"] == "C"
    assert body["ChannelID"] == 7
    assert body["AccountNo"] == "ACC1"
    assert body["ContactedFirstName"] == "Jo" and body["ContactedSurname"] == "Bloggs"
    assert body["OnDateTime"] == "2026-11-24T10:15:00"
    notes = body["Notes"]
    assert "Inbound call" in notes and "3m 25s" in notes and "Billing question" in notes
    assert "4111" not in notes.replace("****1111", "")  # no card digits leak
    assert len(notes) <= 500


def test_caliq_summary_is_capped(m: Mappings) -> None:
    body = m.caliq_interaction(event(subject="s" * 2000, outcome="o" * 2000))
    assert len(body["Notes"]) <= 500 and body["Notes"].endswith(TRUNCATION_MARKER)


def test_caliq_account_no_too_long(m: Mappings) -> None:
    ev = event(udata={**event()["udata"], "CaliqAccountNo": "ACC-12345678"})
    with pytest.raises(PayloadError) as err:
        m.caliq_interaction(ev)
    assert err.value.field == "AccountNo"
    assert "'ACC-12345678' is 12 characters" in str(err.value)


def test_caliq_needs_customer_or_account(m: Mappings) -> None:
    with pytest.raises(PayloadError, match="CustomerID or AccountNo"):
        m.caliq_interaction(event(udata={"FirstName": "Jo", "LastName": "B"}))
    body = m.caliq_interaction(
        event(udata={"CaliqCustomerID": "12", "FirstName": "Jo", "LastName": "B"})
    )
    assert body["CustomerID"] == 12 and "AccountNo" not in body


def test_caliq_needs_contacted_by(m: Mappings) -> None:
    with pytest.raises(PayloadError) as err:
        m.caliq_interaction(event(owner_id=None))
    assert str(err.value).startswith("caliq.ContactedBy: is required")
    assert "udata.CaliqEmployeeID" in str(err.value)


def test_caliq_names_needed_without_contact_id(m: Mappings) -> None:
    with pytest.raises(PayloadError, match="ContactedSurname"):
        m.caliq_interaction(event(udata={"CaliqAccountNo": "A1", "FirstName": "Jo"}))
    body = m.caliq_interaction(event(udata={"CaliqAccountNo": "A1", "CaliqContactID": "9"}))
    assert body["ContactID"] == 9


def test_bad_udata_integer_is_payload_error(m: Mappings) -> None:
    ev = event(udata={**event()["udata"], "OracleAccountPartyId": "ACME"})
    with pytest.raises(PayloadError) as err:
        m.oracle_interaction(ev, thread_key="T", closed=False)
    assert err.value.field == "AccountPartyId" and "udata.OracleAccountPartyId" in str(err.value)


def test_required_source_missing(m: Mappings) -> None:
    with pytest.raises(
        PayloadError, match=r"oracle\.phone_call\.ExternalSystemCallId: is required"
    ):
        m.oracle_phone_call(event(interaction_id=""), interaction_id=1)


def test_custom_mapping_template_and_list_transform(tmp_path: Path) -> None:
    for name in ("oracle.yaml", "agents.csv"):
        shutil.copy(REPO_MAPPINGS / name, tmp_path / name)
    (tmp_path / "caliq.yaml").write_text(
        "interaction_create:\n"
        "  UniqueID: {template: 'GEN-{interaction_id}', required: true}\n"
        "  Kind: {value: c, transform: upper}\n"
        "  ChannelID: {value: 3}\n"
        "  AccountNo: {source: [udata.Acct, customer_id], transform: [string, upper]}\n"
        "  ContactedBy: {source: agent.caliq_employee_id, default: E000}\n"
        "  ContactID: {value: 1}\n"
    )
    m = load_mappings(tmp_path, SETTINGS)
    body = m.caliq_interaction(event(owner_id=None, customer_id="c1"))
    assert body == {
        "UniqueID": "GEN-00F0AB12CD34EF56",
        "Kind": "C",
        "ChannelID": 3,
        "AccountNo": "C1",
        "ContactedBy": "E000",
        "ContactID": 1,
    }
