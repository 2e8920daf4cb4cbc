"""`callsync demo`: the whole pipeline on one machine, with nothing to configure.

Starts both CRM simulators and an in-process worker (Redis if one answers, else Celery's
in-memory broker), publishes a few shuffled, duplicated sample threads exactly as a producer
would, waits until every call is synced, and prints what each CRM received.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import ExitStack

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from worker.publishing import publish_event
from worker.samples import event, stream

SANDBOX_ENV = {
    "ORACLE_USERNAME": "sandbox",
    "ORACLE_PASSWORD": "sandbox-password",
    "CALIQ_API_KEY": "sandbox-key",
    "CALIQ_CHANNEL_ID": "1",
    "ORACLE_PHONE_CHANNEL_ID": "100100052667990",
}


def redis_reachable(url: str) -> bool:
    if not url.startswith(("redis://", "rediss://")):
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def run_demo(console: Console, *, threads: int = 3, timeout: float = 60.0) -> int:
    from celery.contrib.testing.worker import start_worker

    from worker.adapters.models import CallRow, JournalRow
    from worker.bootstrap import get_services, prepare_database, reset_services
    from worker.celery_app import QUEUE, app
    from worker.sandbox.admin import SimulatorAdmin
    from worker.sandbox.server import Simulators
    from worker.settings import BaseConfig, get_settings

    if not console.is_terminal:  # piped: the tables still want their full width
        console = Console(width=140)
    with ExitStack() as stack:
        sims = stack.enter_context(Simulators())
        os.environ.update({**SANDBOX_ENV, "ORACLE_BASE_URL": sims.oracle_url,
                           "CALIQ_BASE_URL": sims.caliq_url})
        os.environ.setdefault("LOG_LEVEL", "WARNING")  # the tables are the demo's output
        broker = BaseConfig().celery_broker_url
        if not redis_reachable(broker):
            broker = "memory://"
        app.conf.broker_url = broker
        get_settings.cache_clear()
        reset_services()
        settings = get_settings()
        prepare_database(settings.database_url)
        console.print(f"[bold]callsync demo[/bold]  broker={broker}  "
                      f"database={settings.database_url}")
        console.print(f"Oracle simulator {sims.oracle_url}   Caliq simulator {sims.caliq_url}")
        stack.enter_context(start_worker(
            app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING",
            queues=[QUEUE], shutdown_timeout=10,
        ))
        run = uuid.uuid4().hex[:6]
        events = stream(f"demo-{run}", threads)
        bad = event(f"demo-{run}-bad", status=9)
        for item in [*events, bad]:
            publish_event(app, item)
        call_ids = {e["interaction_id"] for e in events}
        console.print(f"published {len(events) + 1} events ({len(call_ids)} calls in "
                      f"{threads} threads, shuffled, every event twice, plus one bad event)")
        services = get_services()
        deadline = time.monotonic() + timeout
        synced = 0
        while time.monotonic() < deadline:
            with services.transaction() as s:
                synced = len(list(s.scalars(select(CallRow.interaction_id).where(
                    CallRow.interaction_id.in_(call_ids), CallRow.sync_state == "synced"))))
            if synced == len(call_ids):
                break
            time.sleep(0.3)
        with services.transaction() as s:
            rejected = list(s.scalars(select(JournalRow.error).where(
                JournalRow.interaction_id == bad["interaction_id"])))
        _print_records(console, SimulatorAdmin(sims.oracle_url).state(),
                       SimulatorAdmin(sims.caliq_url).state(), rejected)
        console.print(f"calls synced: {synced}/{len(call_ids)}")
        return 0 if synced == len(call_ids) else 1


def _print_records(console: Console, oracle: dict, caliq: dict, rejected: list[str]) -> None:
    by_id = {i["InteractionId"]: i for i in oracle.get("interactions", [])}
    phone_calls = {p["InteractionId"]: p for p in oracle.get("phoneCalls", [])}
    table = Table(title="Oracle Fusion Service: interactions and phoneCalls")
    for column in ("Genesys call", "InteractionId", "Parent", "Status", "phoneCall", "Lines"):
        table.add_column(column, no_wrap=True)
    for item in sorted(by_id.values(), key=lambda i: str(i.get("MediaItemId"))):
        parent = by_id.get(item.get("ParentInteractionId"), {})
        top = item.get("ParentInteractionId") == item["InteractionId"]
        call = phone_calls.get(item["InteractionId"], {})
        table.add_row(
            str(item.get("MediaItemId")), str(item["InteractionId"]),
            "top-level" if top else f"child of {parent.get('MediaItemId')}",
            str(item.get("StatusCd", "")).removeprefix("ORA_SVC_"),
            str(call.get("CallId", "-")), str(len(call.get("TranscriptMessage") or [])),
        )
    console.print(table)
    caliq_table = Table(title="Caliq: InteractionCreate")
    for column in ("UniqueID", "CustomerID", "ContactedBy", "Notes"):
        caliq_table.add_column(column, no_wrap=column != "Notes")
    for item in sorted(caliq.get("interactions", []), key=lambda i: str(i.get("UniqueID"))):
        caliq_table.add_row(str(item.get("UniqueID")), str(item.get("CustomerID")),
                            str(item.get("ContactedBy")), str(item.get("Notes", ""))[:60])
    console.print(caliq_table)
    for error in rejected:
        console.print(f"[yellow]rejected:[/yellow] {error}")
