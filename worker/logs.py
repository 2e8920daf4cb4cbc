"""structlog JSON logs, for callsync and for Celery's own loggers alike.

Every line of a call carries the ids bound to it (interaction_id, thread, leg, task_id), through
structlog's contextvars. Secrets are masked by a processor as a last line of defence; transcript
text is never passed to a logger in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog

_SECRETS: tuple[str, ...] = ()


def _mask_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    if not _SECRETS:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            for secret in _SECRETS:
                if secret and secret in value:
                    value = value.replace(secret, "***")
            event[key] = value
    return event


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written (a test runner may swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", secrets: Iterable[str] = (), stream: Any = None) -> None:
    global _SECRETS
    _SECRETS = tuple(s for s in secrets if s)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
    ]
    structlog.configure(
        # filter_by_level first: a line below the level costs no timestamp, merge or masking
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or _CurrentStderr())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
