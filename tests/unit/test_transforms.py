"""Named transforms: dates, direction table, phone normalisation, card redaction."""

from __future__ import annotations

import base64

import pytest

from worker.mapping.transforms import TRANSFORMS, TransformContext, apply, luhn_ok, redact_text

DIRECTIONS = TransformContext(
    directions={"inbound": "ORA_SVC_INBOUND", "outbound": "ORA_SVC_OUTBOUND", "default": "X_DEF"}
)


def test_registry_has_the_documented_names() -> None:
    assert set(TRANSFORMS) >= {
        "string", "integer", "boolean", "oracle_datetime", "caliq_datetime", "direction",
        "phone", "redact", "upper", "lower", "base64",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "oracle", "caliq"),
    [
        ("2026-11-24T10:15:00.000Z", "2026-11-24T10:15:00+00:00", "2026-11-24T10:15:00"),
        ("2026-11-24T10:15:00Z", "2026-11-24T10:15:00+00:00", "2026-11-24T10:15:00"),
        # an offset is converted to UTC, not dropped
        ("2026-11-24T11:15:00.250+01:00", "2026-11-24T10:15:00+00:00", "2026-11-24T10:15:00"),
    ],
)
def test_datetimes(raw: str, oracle: str, caliq: str) -> None:
    assert apply("oracle_datetime", raw) == oracle
    assert apply("caliq_datetime", raw) == caliq


def test_bad_datetime_raises() -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        apply("oracle_datetime", "yesterday")


def test_direction_uses_the_table_case_insensitively() -> None:
    assert apply("direction", "Inbound", DIRECTIONS) == "ORA_SVC_INBOUND"
    assert apply("direction", "OUTBOUND", DIRECTIONS) == "ORA_SVC_OUTBOUND"
    assert apply("direction", "Internal", DIRECTIONS) == "X_DEF"


def test_direction_without_default_raises() -> None:
    ctx = TransformContext(directions={"inbound": "ORA_SVC_INBOUND"})
    with pytest.raises(ValueError, match="Internal"):
        apply("direction", "Internal", ctx)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("tel:+44 20 7946 0958", "+442079460958"),
        ("sip:+15551234567@pbx.example.com;user=phone", "+15551234567"),
        ("SIP:0207-946-0958@10.0.0.1", "02079460958"),
        ("(555) 123 4567", "5551234567"),
        ("anonymous", None),
    ],
)
def test_phone(raw: str, expected: str | None) -> None:
    assert apply("phone", raw) == expected


def test_integer_and_boolean() -> None:
    assert apply("integer", " 42 ") == 42
    assert apply("integer", 7) == 7
    with pytest.raises(ValueError):
        apply("integer", "12a")
    with pytest.raises(ValueError):
        apply("integer", True)  # a bool is not an id
    assert apply("boolean", "Y") is True
    assert apply("boolean", "false") is False
    with pytest.raises(ValueError):
        apply("boolean", "maybe")


def test_none_passes_through_every_transform() -> None:
    for name in TRANSFORMS:
        assert apply(name, None, DIRECTIONS) is None, name


def test_string_upper_lower_base64() -> None:
    assert apply("string", 12) == "12"
    assert apply("upper", "ab") == "AB"
    assert apply("lower", "AB") == "ab"
    assert base64.b64decode(apply("base64", "héllo")).decode() == "héllo"


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")


@pytest.mark.parametrize(
    "card", ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005"]
)
def test_luhn_valid_card_is_masked(card: str) -> None:
    out = redact_text(f"my card is {card}, thanks")
    assert out == f"my card is [card ****{card.replace(' ', '').replace('-', '')[-4:]}], thanks"


@pytest.mark.parametrize(("text", "masked"), [
    ("4111111111111111", "[card ****1111]"),                  # the whole text
    ("4111111111111111 is mine", "[card ****1111] is mine"),  # at the start
    ("x4111111111111111y", "x[card ****1111]y"),              # between letters
    ("94111111111111111", "94111111111111111"),               # a digit before it: one run
    ("9 4111111111111111", "9 4111111111111111"),             # one space joins them: 17
    ("9  4111111111111111", "9  [card ****1111]"),            # two do not
])
def test_a_card_is_found_wherever_it_starts_and_only_there(text: str, masked: str) -> None:
    assert redact_text(text) == masked


def test_luhn_invalid_16_digits_left_alone() -> None:
    text = "order 4111111111111112 shipped"
    assert redact_text(text) == text


def test_short_and_long_digit_runs_left_alone() -> None:
    text = "ref 411111111111 and 41111111111111111111 and +44 20 7946 0958"
    assert redact_text(text) == text


def test_double_separators_do_not_join_groups() -> None:
    text = "4111  1111  1111  1111"  # two spaces: not one number
    assert redact_text(text) == text


def test_redact_is_idempotent() -> None:
    once = redact_text("card 5555 5555 5555 4444")
    assert once == "card [card ****4444]"
    assert redact_text(once) == once
