"""Load and validate mappings/*.yaml once, into plain compiled specs the renderer walks.

Every problem is a MappingError naming `file:line`, the section.field and what is wrong, so a
typo in a mapping file stops the worker at start-up rather than producing a bad payload later.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from worker.mapping.errors import MappingError, PayloadError
from worker.mapping.fit import fit_value
from worker.mapping.schema import (
    CALIQ_INTERACTION_CREATE,
    ORACLE_INTERACTION,
    ORACLE_PHONE_CALL,
    ORACLE_TRANSCRIPT_MESSAGE,
    Target,
)
from worker.mapping.transforms import TRANSFORMS, TransformContext

# Fields of the Genesys UCS phone-call interaction (genesys-ucs-phone-call.txt).
GENESYS_FIELDS = frozenset(
    {
        "interaction_id", "status", "entity_type", "type", "sub_type", "media_type",
        "parent_id", "thread_id", "external_id", "owner_id", "creator_app_id", "start_date",
        "end_date", "timeshift", "duration", "outcome", "phone_number", "tconnection_id",
        "customer_id", "category_id", "subject", "stopped_reason", "text", "structured_text",
        "structured_text_mime", "binary_content", "binary_content_mime", "binary_content_size",
        "allow_children",
    }
)  # fmt: skip
AGENT_ATTRS = frozenset({"owner_id", "oracle_resource_id", "caliq_employee_id", "name"})
CALL_ATTRS = frozenset({"summary", "duration_seconds", "thread_key", "end_date", "message_count"})
MESSAGE_ATTRS = frozenset({"speaker", "text", "role", "index"})
# Always accepted as `settings.<name>` even when load_mappings is given no settings.
KNOWN_SETTINGS = frozenset({"oracle_phone_channel_id", "caliq_channel_id"})

SPEC_KEYS = ("source", "value", "template", "default", "transform", "required")
ORACLE_SECTIONS = (
    "interaction",
    "closed",
    "thread_placeholder",
    "phone_call",
    "transcript",
    "directions",
)
ORACLE_REQUIRED = ("interaction", "closed", "thread_placeholder", "phone_call", "directions")
CALIQ_SECTIONS = ("interaction_create",)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class SourcePath:
    root: str  # "event", "udata", "agent", "settings", "call" or "message"
    key: str
    text: str  # as written, for messages


@dataclass(frozen=True)
class FieldSpec:
    name: str
    where: str  # "mappings/oracle.yaml:12"
    sources: tuple[SourcePath, ...] = ()
    template: tuple[str | SourcePath, ...] | None = None
    is_constant: bool = False
    constant: Any = None  # already transformed and fitted
    default: Any = None  # already transformed (fitted at render, with the rest)
    transforms: tuple[str, ...] = ()
    required: bool = False

    def describe_source(self) -> str:
        if self.template is not None:
            return "template " + "".join(
                p if isinstance(p, str) else "{" + p.text + "}" for p in self.template
            )
        return ", ".join(s.text for s in self.sources) or "value"


@dataclass(frozen=True)
class Section:
    name: str
    target: Target
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class TranscriptSpec:
    redact: bool
    roles: Mapping[str, str]  # lower-cased speaker -> RoleCd
    default_role: str | None
    message: Section


@dataclass(frozen=True)
class OracleSpec:
    interaction: Section
    closed: Section
    thread_placeholder: Section
    phone_call: Section
    transcript: TranscriptSpec | None
    context: TransformContext


@dataclass(frozen=True)
class CaliqSpec:
    interaction_create: Section
    context: TransformContext


class _File:
    """One YAML file being validated: knows its path, settings and how to point at a line."""

    def __init__(self, path: Path, settings: Iterable[str]) -> None:
        self.path = str(path)
        self.settings = frozenset(settings) | KNOWN_SETTINGS
        self.root = self._parse(path)

    def _parse(self, path: Path) -> CommentedMap:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MappingError(self.path, 1, "file not found") from None
        try:
            data = YAML(typ="rt").load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise MappingError(self.path, line, f"invalid YAML: {exc.problem or exc}") from None
        except YAMLError as exc:
            raise MappingError(self.path, 1, f"invalid YAML: {exc}") from None
        if not isinstance(data, CommentedMap):
            raise MappingError(self.path, 1, "expected a mapping of sections at the top level")
        return data

    def error(self, line: int, where: str, problem: str) -> MappingError:
        return MappingError(self.path, line, f"{where}: {problem}")

    def at(self, line: int) -> str:
        return f"{self.path}:{line}"


def _key_line(node: Any, key: Any, fallback: int) -> int:
    try:
        return int(node.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return fallback


def _item_line(node: Any, index: int, fallback: int) -> int:
    try:
        return int(node.lc.item(index)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return fallback


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_sections(f: _File, known: tuple[str, ...], required: tuple[str, ...]) -> None:
    for key in f.root:
        if key not in known:
            raise f.error(
                _key_line(f.root, key, 1),
                str(key),
                f"unknown section {key!r}{_suggest(str(key), known)} (known: {', '.join(known)})",
            )
    for key in required:
        if key not in f.root:
            raise MappingError(f.path, 1, f"missing section {key!r}")


def _source_path(f: _File, line: int, where: str, text: Any, allow_message: bool) -> SourcePath:
    if not isinstance(text, str) or not text.strip():
        raise f.error(line, where, f"source path must be a non-empty string, got {text!r}")
    text = text.strip()
    root, _, rest = text.partition(".")
    if root in GENESYS_FIELDS:
        if rest:
            raise f.error(line, where, f"Genesys field {root!r} has no sub-field {rest!r}")
        return SourcePath("event", root, text)
    if root == "udata":
        if not rest:
            raise f.error(line, where, "udata needs a key: udata.<key>")
        return SourcePath("udata", rest, text)  # udata keys may themselves contain dots
    allowed = {
        "agent": AGENT_ATTRS,
        "settings": f.settings,
        "call": CALL_ATTRS,
        "message": MESSAGE_ATTRS if allow_message else None,
    }
    if root not in allowed or allowed[root] is None:
        roots = (
            sorted(GENESYS_FIELDS)
            + ["udata.<key>", "agent.<attr>", "settings.<name>", "call.<attr>"]
            + (["message.<attr>"] if allow_message else [])
        )
        raise f.error(
            line,
            where,
            f"unknown source {text!r}{_suggest(root, roots)}: a source starts "
            "with a Genesys field, udata., agent., settings. or call."
            + (" or message." if allow_message else ""),
        )
    names = allowed[root]
    assert names is not None
    if rest not in names:
        raise f.error(
            line,
            where,
            f"unknown {root} attribute {rest!r}{_suggest(rest, names)} "
            f"(known: {', '.join(sorted(names))})",
        )
    return SourcePath(root, rest, text)


def _scalar(f: _File, line: int, where: str, key: str, value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return str(value) if isinstance(value, str) else value
    raise f.error(line, where, f"{key} must be a single value, not {type(value).__name__}")


def _field_spec(
    f: _File,
    section: str,
    target: Target,
    name: str,
    node: Any,
    line: int,
    ctx: TransformContext,
    allow_message: bool,
) -> FieldSpec:
    where = f"{section}.{name}"
    if not isinstance(node, CommentedMap):
        raise f.error(line, where, "expected a mapping like {source: <path>} or {value: <x>}")
    for key in node:
        if key not in SPEC_KEYS:
            raise f.error(
                _key_line(node, key, line),
                where,
                f"unknown key {key!r}{_suggest(str(key), SPEC_KEYS)} "
                f"(known: {', '.join(SPEC_KEYS)})",
            )
    given = [k for k in ("source", "value", "template") if k in node]
    if len(given) != 1:
        raise f.error(line, where, "give exactly one of source, value or template")

    transforms: tuple[str, ...] = ()
    if "transform" in node:
        t_line = _key_line(node, "transform", line)
        raw = node["transform"]
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, CommentedSeq | list) or not names:
            raise f.error(t_line, where, "transform must be a name or a list of names")
        for i, t in enumerate(names):
            if not isinstance(t, str) or t not in TRANSFORMS:
                raise f.error(
                    _item_line(names, i, t_line) if isinstance(names, CommentedSeq) else t_line,
                    where,
                    f"unknown transform {t!r}{_suggest(str(t), TRANSFORMS)} "
                    f"(known: {', '.join(TRANSFORMS)})",
                )
        transforms = tuple(names)

    required = node.get("required", False)
    if not isinstance(required, bool):
        raise f.error(_key_line(node, "required", line), where, "required must be true or false")

    spec_field = target.fields[name]

    def prepared(key: str, raw: Any) -> Any:
        """A constant run through the transforms and fitted now, so a bad one fails at load."""
        k_line = _key_line(node, key, line)
        value = _scalar(f, k_line, where, key, raw)
        try:
            for t in transforms:
                value = TRANSFORMS[t](value, ctx)
            fitted = fit_value(target, spec_field, value)
        except (ValueError, PayloadError) as exc:
            raise f.error(k_line, where, f"{key} {raw!r} does not fit: {exc}") from None
        return value, fitted

    default = None
    if "default" in node:
        default, _ = prepared("default", node["default"])
    common: dict[str, Any] = {
        "name": name,
        "where": f.at(line),
        "default": default,
        "transforms": transforms,
        "required": required,
    }
    if "value" in node:
        _, fitted = prepared("value", node["value"])
        if fitted is None:
            raise f.error(_key_line(node, "value", line), where, "value must not be empty")
        return FieldSpec(is_constant=True, constant=fitted, **common)
    if "template" in node:
        t_line = _key_line(node, "template", line)
        template = node["template"]
        if not isinstance(template, str):
            raise f.error(
                t_line, where, "template must be a string like 'Thread {call.thread_key}'"
            )
        parts: list[str | SourcePath] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(template):
            parts.append(template[pos : match.start()])
            parts.append(_source_path(f, t_line, where, match.group(1), allow_message))
            pos = match.end()
        parts.append(template[pos:])
        return FieldSpec(template=tuple(p for p in parts if p != ""), **common)

    s_line = _key_line(node, "source", line)
    raw = node["source"]
    if isinstance(raw, CommentedSeq):
        if not raw:
            raise f.error(s_line, where, "source list is empty")
        sources = tuple(
            _source_path(f, _item_line(raw, i, s_line), where, s, allow_message)
            for i, s in enumerate(raw)
        )
    else:
        sources = (_source_path(f, s_line, where, raw, allow_message),)
    return FieldSpec(sources=sources, **common)


def _section(
    f: _File,
    name: str,
    target: Target,
    ctx: TransformContext,
    node: Any = None,
    line: int | None = None,
    allow_message: bool = False,
    check_required: bool = False,
) -> Section:
    if node is None:
        node, line = f.root.get(name), _key_line(f.root, name, 1)
    assert line is not None
    if node is None:  # `closed:` with nothing under it: adds nothing
        return Section(name, target, ())
    if not isinstance(node, CommentedMap):
        raise f.error(line, name, "expected a mapping of target fields")
    specs = []
    for field_name in node:
        f_line = _key_line(node, field_name, line)
        if field_name in target.reserved:
            raise f.error(
                f_line,
                f"{name}.{field_name}",
                f"{target.title} field {field_name!r} is set by callsync, not mapped",
            )
        if field_name not in target.fields:
            raise f.error(
                f_line,
                f"{name}.{field_name}",
                f"unknown {target.title} field {field_name!r}"
                f"{_suggest(str(field_name), target.fields)}",
            )
        specs.append(
            _field_spec(f, name, target, field_name, node[field_name], f_line, ctx, allow_message)
        )
    if check_required:
        mapped = {s.name for s in specs}
        for field in target.fields.values():
            if field.required and field.name not in target.reserved and field.name not in mapped:
                raise f.error(
                    line, name, f"required {target.title} field {field.name!r} is not mapped"
                )
    return Section(name, target, tuple(specs))


def _code_table(
    f: _File, name: str, node: Any, line: int, target: Target, field: str
) -> dict[str, str]:
    """A `{genesys_value: ORACLE_CODE}` table, keys lower-cased, codes fitted to `field`."""
    if not isinstance(node, CommentedMap) or not node:
        raise f.error(line, name, "expected a non-empty mapping of value: code")
    table: dict[str, str] = {}
    for key, code in node.items():
        k_line = _key_line(node, key, line)
        if not isinstance(code, str) or not code.strip():
            raise f.error(k_line, f"{name}.{key}", f"expected a code string, got {code!r}")
        try:
            fit_value(target, target.fields[field], code)
        except PayloadError as exc:
            raise f.error(k_line, f"{name}.{key}", str(exc)) from None
        if str(key).lower() in table:
            raise f.error(k_line, f"{name}.{key}", "listed twice (keys are case-insensitive)")
        table[str(key).lower()] = code
    return table


def _transcript(f: _File, ctx: TransformContext) -> TranscriptSpec | None:
    node = f.root.get("transcript")
    if node is None:
        return None
    line = _key_line(f.root, "transcript", 1)
    if not isinstance(node, CommentedMap):
        raise f.error(line, "transcript", "expected a mapping with redact, roles and message")
    for key in node:
        if key not in ("redact", "roles", "message"):
            raise f.error(
                _key_line(node, key, line),
                f"transcript.{key}",
                "unknown key (known: redact, roles, message)",
            )
    redact = node.get("redact", True)  # on unless switched off: transcripts carry card numbers
    if not isinstance(redact, bool):
        raise f.error(_key_line(node, "redact", line), "transcript.redact", "must be true or false")
    roles: dict[str, str] = {}
    if "roles" in node:
        roles = _code_table(
            f,
            "transcript.roles",
            node["roles"],
            _key_line(node, "roles", line),
            ORACLE_TRANSCRIPT_MESSAGE,
            "RoleCd",
        )
    if "message" not in node:
        raise f.error(line, "transcript", "missing `message:` (the TranscriptMessage fields)")
    message = _section(
        f,
        "transcript.message",
        ORACLE_TRANSCRIPT_MESSAGE,
        ctx,
        node=node["message"],
        line=_key_line(node, "message", line),
        allow_message=True,
    )
    default_role = roles.pop("default", None)
    return TranscriptSpec(redact, roles, default_role, message)


def load_oracle(path: Path, settings: Iterable[str] = ()) -> OracleSpec:
    f = _File(path, settings)
    _check_sections(f, ORACLE_SECTIONS, ORACLE_REQUIRED)
    directions = _code_table(
        f,
        "directions",
        f.root["directions"],
        _key_line(f.root, "directions", 1),
        ORACLE_INTERACTION,
        "DirectionCd",
    )
    ctx = TransformContext(directions=directions)
    return OracleSpec(
        interaction=_section(f, "interaction", ORACLE_INTERACTION, ctx),
        closed=_section(f, "closed", ORACLE_INTERACTION, ctx),
        thread_placeholder=_section(f, "thread_placeholder", ORACLE_INTERACTION, ctx),
        phone_call=_section(f, "phone_call", ORACLE_PHONE_CALL, ctx),
        transcript=_transcript(f, ctx),
        context=ctx,
    )


def load_caliq(path: Path, settings: Iterable[str] = ()) -> CaliqSpec:
    f = _File(path, settings)
    _check_sections(f, CALIQ_SECTIONS, CALIQ_SECTIONS)
    ctx = TransformContext()
    section = _section(f, "interaction_create", CALIQ_INTERACTION_CREATE, ctx, check_required=True)
    mapped = {s.name for s in section.fields}
    if not mapped & {"CustomerID", "AccountNo"}:
        raise f.error(
            _key_line(f.root, "interaction_create", 1),
            "interaction_create",
            "map CustomerID or AccountNo: Caliq requires one of them",
        )
    return CaliqSpec(interaction_create=section, context=ctx)
