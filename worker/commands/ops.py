"""Operating commands: replay, status, failures, check, alive. Each is a few lines over a service
function (worker.replay, worker.adapters.queries, worker.commands.health); registered in worker.cli.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.service import utcnow

IdsArg = Annotated[list[str] | None, typer.Argument(help="Genesys interaction ids.",
                                                    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _cli() -> Any:
    # worker.cli imports this module to register the commands: import it back lazily.
    from worker import cli

    return cli


def _services() -> Any:
    """The service layer, with its JSON logs on stderr: stdout is the command's output."""
    return _cli()._services()


def _when(text: str | None, option: str) -> datetime | None:
    from worker.replay import parse_when

    try:
        return parse_when(text, utcnow())
    except ValueError as exc:
        _cli()._fail(f"{option}: {exc}")
    return None


def replay(
    ids: IdsArg = None,
    state: Annotated[list[str] | None, typer.Option(
        "--state", help="failed, parked, unfinished (pending or retrying), open, synced.",
        show_default=False)] = None,
    leg: Annotated[list[str] | None, typer.Option(
        "--leg", help="Only calls with this leg unfinished; only this leg is reset.",
        show_default=False)] = None,
    since: Annotated[str | None, typer.Option(
        help="Calls active since (ISO 8601, or 30m / 2h / 7d ago).")] = None,
    until: Annotated[str | None, typer.Option(help="Calls active before this time.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many calls.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List what would be sent, and to which CRM; send nothing.")] = False,
    resync: Annotated[bool, typer.Option(
        "--resync", help="PATCH the current Oracle fields of calls already in Oracle.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Resume stuck calls from their last completed step, never creating a second record.

    With no selection: every failed and parked call. Exit code 1 if any call is left failed or
    retrying.
    """
    from worker.replay import Selection
    from worker.replay import replay as run

    cli = _cli()
    try:
        selection = Selection(ids=tuple(ids or ()), states=tuple(state or ()),
                              legs=tuple(leg or ()), since=_when(since, "--since"),
                              until=_when(until, "--until"), limit=limit)
    except ValueError as exc:
        cli._fail(str(exc))
    svc = _services()
    with cli._progress() as progress:
        bar = progress.add_task("dry run" if dry_run else "replaying", total=None)
        try:
            report = run(svc, selection, dry_run=dry_run, resync=resync,
                         on_total=lambda n: progress.update(bar, total=n),
                         on_result=lambda r: progress.advance(bar) if r.selected else None)
        except ValueError as exc:
            cli._fail(str(exc))
    if json_output:
        cli.print_json(report.to_dict())
    else:
        _print_report(cli.console, report)
    raise typer.Exit(1 if report.failed else 0)


def _print_report(console: Any, report: Any) -> None:
    if "dry-run" in report.mode:
        for result in report.results:
            note = "" if result.selected else "  (not selected; runs with its thread)"
            console.print(f"{result.interaction_id}  thread {result.thread_key}  "
                          f"{result.before or '-'}{note}", markup=False, highlight=False)
            for r in result.requests:
                look = "  after a look-up" if r.look_up_first else ""
                console.print(f"    would send  {r.crm:6} {r.method:5} {r.path}  ({r.step}){look}",
                              markup=False, highlight=False)
            if not result.requests:
                console.print(f"    {result.error or 'nothing to send'}", markup=False)
    else:
        table = Table(title=f"callsync {report.mode}")
        for column in ("call", "thread", "before", "after", "outcome", "sent", "error"):
            table.add_column(column, overflow="fold")
        for r in report.results:
            sent = ", ".join(f"{q.method} {q.path} {q.status or '-'}" for q in r.requests)
            table.add_row(r.interaction_id, r.thread_key, r.before, r.after or "-", r.outcome,
                          sent or "-", r.error or "")
        console.print(table)
    counts = " ".join(f"{k}={v}" for k, v in sorted(report.counts().items()))
    console.print(f"{report.mode}: {len(report.results)} calls  {counts or 'nothing selected'}",
                  markup=False, highlight=False)


def status(
    interaction_id: Annotated[str, typer.Argument(help="A Genesys interaction id.")],
    json_output: JsonOpt = False,
) -> None:
    """A call's timeline: events received, requests made, its records, thread, state, error."""
    from worker.adapters import queries
    from worker.commands.views import status_view

    cli = _cli()
    svc = _services()
    with svc.transaction() as s:
        view = status_view(queries.timeline(s, interaction_id))
    if view is None:
        cli._fail(f"no call {interaction_id!r} (and no event journaled for it)", code=1)
    if json_output:
        cli.print_json(view)
        return
    from worker.commands.views import print_status

    print_status(cli.console, view)


def failures(
    json_output: JsonOpt = False,
    leg: Annotated[str | None, typer.Option(
        help="One leg (oracle_interaction, oracle_end, oracle_phone_call, caliq) or input.")]
    = None,
    since: Annotated[str | None, typer.Option(
        help="Last attempt since (ISO 8601, or 30m / 2h / 7d ago).")] = None,
) -> None:
    """One row per failed or parked call, and per bad input event, newest first."""
    from worker.adapters import queries
    from worker.domain.plan import LEGS

    cli = _cli()
    if leg is not None and leg not in (*LEGS, "input"):
        cli._fail(f"--leg: one of {', '.join((*LEGS, 'input'))}")
    svc = _services()
    with svc.transaction() as s:
        rows = queries.failures(s, leg=leg, since=_when(since, "--since"))
    data = [{"interaction_id": r.interaction_id, "leg": r.leg, "state": r.state,
             "error": r.error, "attempts": r.attempts,
             "last_attempt_at": r.last_attempt_at.isoformat() + "Z", "thread": r.thread_key}
            for r in rows]
    if json_output:
        cli.print_json(data)
        return
    table = Table(title=f"{len(data)} failures")
    for column in ("interaction_id", "leg", "state", "attempts", "last attempt", "error"):
        table.add_column(column, overflow="fold")
    for row in data:
        table.add_row(str(row["interaction_id"]), row["leg"], row["state"],
                      str(row["attempts"]), row["last_attempt_at"], row["error"] or "")
    cli.console.print(table)


def check(json_output: JsonOpt = False) -> None:
    """Check settings, database, broker, Oracle and Caliq: exit 0 only when all pass.

    Oracle and Caliq get a cheap authenticated read each (interactions, the channel list).
    """
    from worker.commands.health import run_checks

    cli = _cli()
    results = run_checks()
    if json_output:
        cli.print_json([{"check": r.name, "ok": r.ok, "detail": r.detail} for r in results])
    else:
        for r in results:
            mark = "[green]OK  [/green]" if r.ok else "[red]FAIL[/red]"
            cli.console.print(f"{mark} {r.name:9} ", end="")
            cli.console.print(r.detail, markup=False, highlight=False)
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


def alive(
    max_age: Annotated[float, typer.Option(help="Seconds since the worker last proved it "
                                                "consumes.")] = 120.0,
    file: Annotated[Path | None, typer.Option(help="Default: LIVENESS_FILE.")] = None,
) -> None:
    """Liveness probe: exit 0 if this worker took a message off the broker recently."""
    from worker.observability import liveness_age
    from worker.settings import BaseConfig

    cli = _cli()
    path = file or BaseConfig().liveness_file
    if path is None:
        cli._fail("set LIVENESS_FILE (the worker touches it) or pass --file")
    assert path is not None
    age = liveness_age(path)
    if age is None:
        cli._fail(f"not alive: {path} does not exist (the worker never consumed)", code=1)
    elif age > max_age:
        cli._fail(f"not alive: last consumed {age:.0f}s ago (more than {max_age:.0f}s)", code=1)
    cli.console.print(f"alive: last consumed {age:.0f}s ago", highlight=False)
