import pytest

from tests.factories import event
from worker.domain.events import EventError, Status, merge_events, validate_event


def test_valid_event_keeps_fields_and_derives_thread():
    validated = validate_event(event("c1", thread_id="t1", parent_id="p1"))
    assert validated.interaction_id == "c1"
    assert validated.thread_key == "t1"
    assert validated.status is Status.NEW


@pytest.mark.parametrize(
    ("fields", "thread"),
    [({"thread_id": "t", "parent_id": "p"}, "t"), ({"parent_id": "p"}, "p"), ({}, "c1")],
)
def test_thread_key_falls_back_to_parent_then_own_id(fields, thread):
    assert validate_event(event("c1", **fields)).thread_key == thread


@pytest.mark.parametrize(
    ("raw", "field", "snippet"),
    [
        ([1, 2], "event", "JSON object"),
        ("text", "event", "JSON object"),
        (event(customer_id=None), "customer_id", "mandatory"),
        (event(interaction_id=""), "interaction_id", "mandatory"),
        (event(status=9), "status", "not a known status"),
        ({**event(), "status": "3"}, "status", "integer"),
        (event(entity_type=4), "entity_type", "not a known entity type"),
        (event(entity_type=2), "entity_type", "CHAT"),
        (event(media_type="chat"), "media_type", "not 'voice'"),
        (event(start_date="24/11/2026 10:00"), "start_date", "ISO 8601"),
        (event(end_date="2026-11-24T10:00:00"), "end_date", "ISO 8601"),
        (event(binary_content="https://x/y.wav"), "binary_content_mime", "binary_content"),
        (
            event(binary_content="https://x/y.wav", binary_content_mime="audio/wav"),
            "binary_content_size",
            "binary_content",
        ),
        (event(structured_text="https://x/t.html"), "structured_text_mime", "structured_text"),
        (event(udata=["a", "b"]), "udata", "key-value"),
        (event(owner_id="101"), "owner_id", "integer"),
        (event(interaction_id="x" * 300), "interaction_id", "255"),
    ],
)
def test_bad_input_names_field_and_value(raw, field, snippet):
    with pytest.raises(EventError) as caught:
        validate_event(raw)
    assert caught.value.field == field
    message = str(caught.value)
    assert message.startswith(f"{field}:")
    assert snippet in message
    assert "got" in message


def test_merge_moves_status_forward_only():
    new = event("c1", Status.NEW, subject="first")
    stopped = event("c1", Status.STOPPED, subject="final")
    late = event("c1", Status.IN_PROCESS, subject="late", outcome="sold")
    merged = merge_events([new, stopped, late])
    assert merged["status"] == Status.STOPPED
    assert merged["subject"] == "final"
    assert merged["outcome"] == "sold"  # missing before, so the late event may add it


def test_merge_udata_key_by_key():
    a = event("c1", Status.NEW, udata={"A": 1, "B": 1})
    b = event("c1", Status.STOPPED, udata={"B": 2})
    assert merge_events([a, b])["udata"] == {"A": 1, "B": 2}
    assert merge_events([b, a])["udata"] == {"A": 1, "B": 2}
