"""The `callsync` command line: a few lines per command, each over the service layer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worker.commands import ops
from worker.commands.bench import bench, bench_inprocess
from worker.settings import BaseConfig, SettingsError

cli = typer.Typer(help="callsync: Genesys phone calls into Oracle Fusion Service and Caliq.",
                  no_args_is_help=True, add_completion=False)
db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]{message}[/red]")
    raise typer.Exit(code)


def _services():  # type: ignore[no-untyped-def]
    from worker.bootstrap import get_services, prepare_database
    from worker.mapping import MappingError
    from worker.settings import get_settings

    try:
        settings = get_settings()
        from worker.logs import configure_logging

        configure_logging(settings.log_level, settings.secrets())
        prepare_database(settings.database_url)
        return get_services()
    except (SettingsError, MappingError) as exc:
        _fail(str(exc))


@db_cli.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the tables to the latest schema."""
    from worker.adapters.db import upgrade

    url = BaseConfig().database_url
    upgrade(url, revision)
    console.print(f"database upgraded to {revision}")


@cli.command()
def sandbox(
    host: str = "127.0.0.1",
    oracle_port: Annotated[int, typer.Option(help="Port of the Oracle simulator.")] = 8801,
    caliq_port: Annotated[int, typer.Option(help="Port of the Caliq simulator.")] = 8802,
) -> None:
    """Run the Oracle and Caliq simulators until interrupted."""
    from worker.sandbox.server import serve_forever

    serve_forever(host, oracle_port, caliq_port)


@cli.command()
def sync(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines events.")],
) -> None:
    """Apply events from a file through the same service layer as the worker (back-fills)."""
    from worker.service import handle_event

    svc = _services()
    lines = file.read_text(encoding="utf-8").splitlines()
    counts: dict[str, int] = {}
    with _progress() as progress:
        task = progress.add_task("syncing", total=len(lines))
        for number, line in enumerate(lines, start=1):
            if line.strip():
                received, _ = handle_event(svc, line, source=f"file:{number}")
                counts[received.outcome] = counts.get(received.outcome, 0) + 1
                if received.error:
                    err_console.print(f"{file}:{number}: {received.error}", soft_wrap=True,
                                      markup=False, highlight=False)
            progress.advance(task)
    console.print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no events")
    raise typer.Exit(1 if counts.get("rejected") else 0)


@cli.command()
def demo(
    threads: Annotated[int, typer.Option(help="Sample threads to push.")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the records.")] = 60.0,
) -> None:
    """Start the simulators and a worker, push sample calls, print what each CRM received."""
    from worker.demo import run_demo

    sys.exit(run_demo(console, threads=threads, timeout=timeout))


# Commands defined in their own modules register here, one line each.
cli.command()(bench)
cli.command("bench-inprocess")(bench_inprocess)
cli.command()(ops.replay)
cli.command()(ops.status)
cli.command()(ops.failures)
cli.command()(ops.check)
cli.command()(ops.alive)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console)


def main() -> None:
    cli()


def print_json(data: object) -> None:
    console.print_json(json.dumps(data, default=str))
