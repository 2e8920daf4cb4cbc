"""Transcript parsing: speakers, continuation lines, blank lines and CRLF."""

from __future__ import annotations

from worker.mapping.transcript import Message, parse_transcript


def test_one_message_per_speaker_line() -> None:
    assert parse_transcript("Agent: Hello\nCustomer: Hi there") == [
        Message("Agent", "Hello"),
        Message("Customer", "Hi there"),
    ]


def test_unprefixed_line_continues_previous_message() -> None:
    text = "Customer: my card\nis lost\nAgent: sorry"
    assert parse_transcript(text) == [
        Message("Customer", "my card\nis lost"),
        Message("Agent", "sorry"),
    ]


def test_leading_line_without_speaker_is_unknown() -> None:
    assert parse_transcript("call started\nAgent: hi") == [
        Message("Unknown", "call started"),
        Message("Agent", "hi"),
    ]


def test_blank_lines_skipped_and_crlf_tolerated() -> None:
    text = "Agent: one\r\n\r\n   \r\nCustomer: two\r\nmore\r\n"
    assert parse_transcript(text) == [Message("Agent", "one"), Message("Customer", "two\nmore")]


def test_times_and_urls_do_not_start_messages() -> None:
    text = "Agent: call me back\n10:15 tomorrow\nhttps://example.com/x"
    assert parse_transcript(text) == [
        Message("Agent", "call me back\n10:15 tomorrow\nhttps://example.com/x")
    ]


def test_colon_later_in_line_keeps_speaker() -> None:
    assert parse_transcript("Agent Smith: ref is A:1") == [Message("Agent Smith", "ref is A:1")]


def test_empty_text() -> None:
    assert parse_transcript(None) == []
    assert parse_transcript("\n\n") == []
