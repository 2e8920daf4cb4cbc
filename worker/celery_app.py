"""The Celery application: broker, serialisation and delivery guarantees, in one place.

`celery -A worker worker -Q callsync` finds it as `worker.app`. Configuration comes only from the
environment (worker.settings). At worker start the full settings and the mapping files are
validated, and the embedded SQLite is migrated; a worker with a broken configuration refuses to
start, naming each bad setting. Each prefork child builds its services as it starts.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery, signals

from worker.settings import BaseConfig, SettingsError, get_base_config

QUEUE = "callsync"
# The producers' contract (README "How a producer publishes").
PHONE_CALL_TASK = "callsync.phone_call"


def make_app(config: BaseConfig | None = None) -> Celery:
    config = config or get_base_config()
    app = Celery("callsync", broker=config.celery_broker_url,
                 include=["worker.tasks", "worker.admin_tasks"])
    visibility = {"visibility_timeout": config.celery_visibility_timeout}
    transport = {
        **visibility,
        # Scan for messages of dead workers every interval (not every 10th: the scan is cheap),
        # so a killed worker's unacknowledged messages return soon after the visibility timeout.
        "unacked_restore_interval": min(10, max(1, config.celery_visibility_timeout // 3)),
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_routes={"callsync.*": {"queue": QUEUE}},
        # At-least-once delivery: ack after the work, requeue if the child dies mid-task.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=config.celery_prefetch_multiplier,
        # The visibility timeout must be the same everywhere Celery looks for it.
        broker_transport_options=transport,
        result_backend_transport_options=visibility,
        visibility_timeout=config.celery_visibility_timeout,
        broker_connection_retry_on_startup=True,
        task_time_limit=config.task_time_limit_seconds,
        task_soft_time_limit=max(5, config.task_time_limit_seconds - 30),
        worker_hijack_root_logger=False,
        beat_schedule={
            "callsync-sweep": {
                "task": "callsync.sweep",
                "schedule": config.sweep_interval_seconds,
                "options": {"queue": QUEUE, "expires": config.sweep_interval_seconds},
            },
        },
        timezone="UTC",
    )
    return app


app = make_app()


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    from worker.logs import configure_logging

    base = get_base_config()
    secrets: tuple[str, ...] = ()
    try:
        from worker.settings import get_settings

        secrets = get_settings().secrets()
    except SettingsError:
        pass  # reported by _check_configuration, which stops the worker
    configure_logging(base.log_level, secrets)


@signals.worker_init.connect
def _check_configuration(**_: Any) -> None:
    """Refuse to start on a bad configuration; migrate the embedded database."""
    from worker.bootstrap import preload, prepare_database
    from worker.mapping import MappingError
    from worker.settings import get_settings

    try:
        settings = get_settings()
        preload(settings)
    except (SettingsError, MappingError) as exc:
        print(f"callsync worker cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    prepare_database(settings.database_url)
    import structlog

    from worker.logs import configure_logging
    from worker.settings import delivery_warnings

    configure_logging(settings.log_level, settings.secrets())
    for warning in delivery_warnings(settings):
        structlog.get_logger("callsync").warning("configuration risk", detail=warning)


@signals.worker_process_init.connect
def _build_services_in_child(**_: Any) -> None:
    """A prefork child builds its services (engine, HTTP pools, rate limiters: no connection
    yet) as it starts, from what its parent preloaded, not on its first task."""
    from worker.bootstrap import get_services

    get_services()


# Celery's threads pool acknowledges a finished task from the pool thread, and the consumer's
# event loop asks the broker for the next message only when something wakes it, up to a second
# later (celery/celery#6941). Measured with 64 threads of 200 ms sleeps on Redis: 10% of the
# threads busy; waking the loop every 5 ms: 92%. Prefork wakes the loop through its result pipes.
THREADS_POOL_WAKE_SECONDS = 0.005


@signals.worker_ready.connect
def _wake_the_consumer_loop(sender: Any = None, **_: Any) -> None:
    from celery.concurrency.thread import TaskPool as ThreadsPool

    if isinstance(getattr(sender, "pool", None), ThreadsPool) and sender.timer is not None:
        sender.timer.call_repeatedly(THREADS_POOL_WAKE_SECONDS, _nothing)


def _nothing() -> None:
    """A timer entry whose only effect is that the event loop comes round."""


import worker.observability  # noqa: F401, E402  (signal handlers)
