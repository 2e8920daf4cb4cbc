"""Turn one Genesys event into target payloads by walking the specs compiled at load time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from worker.mapping.agents import Agent, Agents, load_agents
from worker.mapping.errors import PayloadError
from worker.mapping.fit import fit_value
from worker.mapping.loader import (
    CaliqSpec,
    FieldSpec,
    OracleSpec,
    Section,
    SourcePath,
    load_caliq,
    load_oracle,
)
from worker.mapping.schema import ORACLE_PHONE_CALL, Target
from worker.mapping.summary import summarise
from worker.mapping.transcript import Message, parse_transcript
from worker.mapping.transforms import (
    TRANSFORMS,
    TransformContext,
    parse_genesys_datetime,
    redact_text,
)


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | dict | tuple) and not value


class _Call:
    """What one render can read: the event, its agent, settings and derived `call.*` values."""

    def __init__(
        self,
        event: Mapping[str, Any],
        agents: Agents,
        settings: Mapping[str, Any],
        thread_key: str | None,
    ) -> None:
        self.event = event
        self.udata: Mapping[str, Any] = event.get("udata") or {}
        self.agent: Agent | None = agents.for_owner(event.get("owner_id"))
        self.settings = settings
        self.thread_key = thread_key

    @cached_property
    def messages(self) -> list[Message]:
        return parse_transcript(self.event.get("text"))

    @cached_property
    def duration_seconds(self) -> int | None:
        duration = self.event.get("duration")
        if isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0:
            return duration
        start, end = self.event.get("start_date"), self.event.get("end_date")
        if _empty(start) or _empty(end):
            return None
        try:
            seconds = (parse_genesys_datetime(end) - parse_genesys_datetime(start)).total_seconds()
        except ValueError:
            return None
        return int(seconds) if seconds >= 0 else None

    @cached_property
    def end_date(self) -> str | None:
        """end_date, else start_date + duration (ISO, UTC); None when neither is known."""
        end = self.event.get("end_date")
        if not _empty(end):
            return str(end)
        start, duration = self.event.get("start_date"), self.event.get("duration")
        if _empty(start) or not isinstance(duration, int) or isinstance(duration, bool):
            return None
        try:
            moment = parse_genesys_datetime(start) + timedelta(seconds=duration)
        except ValueError:
            return None
        return moment.isoformat()

    @cached_property
    def summary(self) -> str:
        return summarise(self.event, self.agent, self.messages, self.duration_seconds)

    def lookup(self, path: SourcePath, message: Mapping[str, Any] | None = None) -> Any:
        if path.root == "event":
            return self.event.get(path.key)
        if path.root == "udata":
            return self.udata.get(path.key)
        if path.root == "agent":
            return getattr(self.agent, path.key) if self.agent is not None else None
        if path.root == "settings":
            return self.settings.get(path.key)
        if path.root == "message":
            return (message or {}).get(path.key)
        # call.*
        if path.key == "thread_key":
            return self.thread_key
        if path.key == "message_count":
            return len(self.messages)
        return getattr(self, path.key)


def _evaluate(
    spec: FieldSpec,
    target: Target,
    call: _Call,
    ctx: TransformContext,
    message: Mapping[str, Any] | None,
) -> Any:
    if spec.is_constant:
        return spec.constant
    value: Any = None
    if spec.template is not None:
        pieces = []
        for part in spec.template:
            piece = part if isinstance(part, str) else call.lookup(part, message)
            if _empty(piece):
                pieces = None  # a template with a hole is missing, so `default` applies
                break
            pieces.append(str(piece))
        value = "".join(pieces) if pieces is not None else None
    else:
        for source in spec.sources:  # first non-empty wins: udata before agents.csv
            value = call.lookup(source, message)
            if not _empty(value):
                break
    if _empty(value):
        return spec.default  # transformed at load time
    for name in spec.transforms:
        try:
            value = TRANSFORMS[name](value, ctx)
        except ValueError as exc:
            raise PayloadError(
                target.label,
                spec.name,
                value,
                f"transform {name!r} failed on {spec.describe_source()}: {exc}",
            ) from None
    return value


def _render(
    section: Section,
    call: _Call,
    ctx: TransformContext,
    message: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    target = section.target
    out: dict[str, Any] = {}
    for spec in section.fields:
        value = fit_value(
            target, target.fields[spec.name], _evaluate(spec, target, call, ctx, message)
        )
        if value is None:
            if spec.required:
                raise PayloadError(
                    target.label,
                    spec.name,
                    None,
                    f"is required but has no value (from {spec.describe_source()})",
                )
            continue  # never sent as null
        out[spec.name] = value
    return out


def _end(body: dict[str, Any]) -> dict[str, Any]:
    # Without an end time Oracle would leave the interaction open-ended: let it stamp "now".
    if "EndTime" not in body:
        body.setdefault("EndInteractionFlag", True)
    return body


@dataclass(frozen=True)
class Mappings:
    """The loaded, validated mapping files; each method renders one payload, fitted."""

    oracle: OracleSpec
    caliq: CaliqSpec
    agents: Agents
    settings: Mapping[str, Any]

    def _call(self, event: Mapping[str, Any], thread_key: str | None = None) -> _Call:
        return _Call(event, self.agents, self.settings, thread_key)

    def oracle_interaction(
        self, event: Mapping[str, Any], *, thread_key: str, closed: bool
    ) -> dict[str, Any]:
        """Body for POST interactions or POST .../childInteractions (no ParentInteractionId)."""
        call = self._call(event, thread_key)
        body = _render(self.oracle.interaction, call, self.oracle.context)
        if closed:
            body.update(_render(self.oracle.closed, call, self.oracle.context))
            _end(body)
        return body

    def oracle_interaction_end(
        self, event: Mapping[str, Any], *, thread_key: str
    ) -> dict[str, Any]:
        """PATCH body at STOPPED: the interaction fields plus the `closed` section."""
        return self.oracle_interaction(event, thread_key=thread_key, closed=True)

    def oracle_thread_placeholder(
        self, thread_key: str, event: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A top-level interaction for a thread whose root call has not been seen yet."""
        return _render(
            self.oracle.thread_placeholder, self._call(event, thread_key), self.oracle.context
        )

    def oracle_phone_call(self, event: Mapping[str, Any], *, interaction_id: int) -> dict[str, Any]:
        """POST phoneCalls body, with the parsed transcript as TranscriptMessage items."""
        call = self._call(event)
        body = _render(self.oracle.phone_call, call, self.oracle.context)
        body["InteractionId"] = fit_value(
            ORACLE_PHONE_CALL, ORACLE_PHONE_CALL.fields["InteractionId"], interaction_id
        )
        spec = self.oracle.transcript
        if spec is not None and call.messages:
            items = []
            for index, msg in enumerate(call.messages, start=1):
                role = spec.roles.get(msg.speaker.lower(), spec.default_role)
                text = redact_text(msg.text) if spec.redact else msg.text
                item = {"speaker": msg.speaker, "text": text, "role": role, "index": index}
                items.append(_render(spec.message, call, self.oracle.context, item))
            body["TranscriptMessage"] = items
        return body

    def caliq_interaction(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """InteractionCreate body without apiKey, checked against Caliq's documented rules."""
        section = self.caliq.interaction_create
        body = _render(section, self._call(event), self.caliq.context)
        _check_caliq(section, body)
        return body


def _sources(section: Section, *fields: str) -> str:
    described = [f"{s.name} from {s.describe_source()}" for s in section.fields if s.name in fields]
    return "; ".join(described) or "not mapped"


def _check_caliq(section: Section, body: Mapping[str, Any]) -> None:
    target = section.target
    for field in target.fields.values():
        if field.required and field.name not in body:
            raise PayloadError(
                target.label,
                field.name,
                None,
                f"is required by Caliq but has no value ({_sources(section, field.name)})",
            )
    if "CustomerID" not in body and "AccountNo" not in body:
        raise PayloadError(
            target.label,
            "CustomerID",
            None,
            "Caliq requires CustomerID or AccountNo, neither has a value "
            f"({_sources(section, 'CustomerID', 'AccountNo')})",
        )
    if "ContactID" not in body:
        for name in ("ContactedFirstName", "ContactedSurname"):
            if name not in body:
                raise PayloadError(
                    target.label,
                    name,
                    None,
                    f"is required by Caliq when ContactID is not set, but has no value "
                    f"({_sources(section, name, 'ContactID')})",
                )


def load_mappings(directory: Path, settings: Mapping[str, Any] | None = None) -> Mappings:
    """Load oracle.yaml, caliq.yaml and agents.csv from `directory`, validating everything once."""
    directory = Path(directory)
    settings = dict(settings or {})
    return Mappings(
        oracle=load_oracle(directory / "oracle.yaml", settings),
        caliq=load_caliq(directory / "caliq.yaml", settings),
        agents=load_agents(directory / "agents.csv"),
        settings=settings,
    )
