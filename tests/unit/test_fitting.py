"""Fitting rendered values to the documented schemas."""

from __future__ import annotations

import pytest

from worker.mapping import PayloadError
from worker.mapping.fit import TRUNCATION_MARKER, fit_payload, fit_value, truncate
from worker.mapping.schema import (
    CALIQ_INTERACTION_CREATE,
    ORACLE_INTERACTION,
    ORACLE_PHONE_CALL,
    ORACLE_TRANSCRIPT_MESSAGE,
    TARGETS,
)


def test_long_description_truncated_with_marker() -> None:
    out = fit_value(ORACLE_INTERACTION, ORACLE_INTERACTION.fields["Description"], "x" * 1200)
    assert len(out) <= 1000
    assert out.endswith(TRUNCATION_MARKER)


def test_text_at_the_limit_is_untouched() -> None:
    field = ORACLE_INTERACTION.fields["Description"]
    assert fit_value(ORACLE_INTERACTION, field, "y" * 1000) == "y" * 1000


def test_truncate_never_exceeds_max() -> None:
    for n in range(1, 30):
        assert len(truncate("z" * 100, n)) <= n


def test_display_name_truncated_to_64() -> None:
    field = ORACLE_TRANSCRIPT_MESSAGE.fields["PostedByDisplayName"]
    out = fit_value(ORACLE_TRANSCRIPT_MESSAGE, field, "N" * 80)
    assert len(out) == 64 and out.endswith(TRUNCATION_MARKER)


def test_long_account_no_is_payload_error() -> None:
    field = CALIQ_INTERACTION_CREATE.fields["AccountNo"]
    with pytest.raises(PayloadError) as err:
        fit_value(CALIQ_INTERACTION_CREATE, field, "ACC-12345678")
    assert str(err.value) == (
        "caliq.AccountNo: value 'ACC-12345678' is 12 characters, the documented maximum is 10"
    )
    assert err.value.field == "AccountNo" and err.value.value == "ACC-12345678"


def test_long_identifier_never_truncated() -> None:
    field = ORACLE_INTERACTION.fields["OriginalSystemReference"]
    with pytest.raises(PayloadError, match=r"OriginalSystemReference.*256 characters"):
        fit_value(ORACLE_INTERACTION, field, "a" * 256)


def test_long_code_is_payload_error() -> None:
    with pytest.raises(PayloadError, match="DirectionCd"):
        fit_value(ORACLE_INTERACTION, ORACLE_INTERACTION.fields["DirectionCd"], "X" * 31)


def test_phone_normalised_then_checked() -> None:
    field = ORACLE_PHONE_CALL.fields["PhoneNumber"]
    assert fit_value(ORACLE_PHONE_CALL, field, "sip:+44 20 7946 0958@pbx") == "+442079460958"
    assert fit_value(ORACLE_PHONE_CALL, field, "anonymous") is None
    with pytest.raises(PayloadError, match=r"PhoneNumber.*31 characters"):
        fit_value(ORACLE_PHONE_CALL, field, "+" + "1" * 30)


def test_integer_field_type_checked() -> None:
    field = ORACLE_INTERACTION.fields["AccountPartyId"]
    assert fit_value(ORACLE_INTERACTION, field, "300100") == 300100
    with pytest.raises(PayloadError, match="not an integer"):
        fit_value(ORACLE_INTERACTION, field, "abc")
    with pytest.raises(PayloadError, match="not an integer"):
        fit_value(ORACLE_INTERACTION, field, True)


def test_boolean_field_type_checked() -> None:
    field = ORACLE_INTERACTION.fields["EndInteractionFlag"]
    with pytest.raises(PayloadError, match="not a boolean"):
        fit_value(ORACLE_INTERACTION, field, "true")


def test_fit_payload_drops_missing_fields() -> None:
    assert fit_payload(ORACLE_INTERACTION, {"Description": "d", "EndTime": None}) == {
        "Description": "d"
    }


def test_schema_has_documented_limits() -> None:
    assert set(TARGETS) == {
        "oracle.interaction", "oracle.phone_call", "oracle.transcript_message",
        "caliq.interaction_create",
    }  # fmt: skip
    assert ORACLE_INTERACTION.fields["Description"].max_length == 1000
    assert ORACLE_PHONE_CALL.fields["PhoneNumber"].max_length == 30
    assert ORACLE_PHONE_CALL.fields["ExternalSystemCallId"].max_length == 255
    assert CALIQ_INTERACTION_CREATE.fields["ContactedBy"].max_length == 10
    assert CALIQ_INTERACTION_CREATE.fields["Kind"].max_length == 1
    assert "apiKey" not in CALIQ_INTERACTION_CREATE.fields
    for target in TARGETS.values():
        for field in target.fields.values():
            if field.kind in ("text", "phone", "identifier", "code"):
                assert field.type == "string", field
