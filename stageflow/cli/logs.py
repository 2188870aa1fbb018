"""``stageflow logs RUN [--stage S] [--follow]``: what a run's stages logged and printed.

Lines come from the control plane, which workers ship them to (``worker/shipper.py``), so this
works from any machine and after the workers are gone. Pages are fetched with the ``after``
cursor; ``--follow`` then streams new lines (NDJSON) until the run ends, reconnecting from the
last line it saw if the connection drops (the server replays from ``after``, so nothing is
missed or shown twice).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import typer

from stageflow.cli.control_api import ControlApi, check, cli_errors, server_option
from stageflow.worker.control import ControlPlaneError

__all__ = ["format_line", "logs"]

PAGE = 1000
RECONNECT_ATTEMPTS = 10
"""Consecutive failed reconnections (with backoff up to 5 s) before ``--follow`` gives up."""


def format_line(line: dict[str, Any]) -> str:
    """``12:00:01 square[2] message`` (``square[2]#3`` for a third attempt)."""
    at = line.get("at")
    when = ""
    if isinstance(at, str):
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone().strftime("%X")
        except ValueError:
            when = at
    where = str(line.get("stage") or "-")
    if line.get("instance") is not None:
        where += f"[{line['instance']}]"
    if (line.get("attempt") or 1) > 1:
        where += f"#{line['attempt']}"
    return f"{when} {where} {line.get('message', '')}"


def _pages(api: ControlApi, run_id: str, stage: str | None) -> Iterator[tuple[list[Any], Any]]:
    """Every page of the run's lines so far, with the cursor after each."""
    after: Any = None
    while True:
        page = api.get(
            f"/api/v1/runs/{run_id}/logs", {"stage": stage, "after": after, "limit": PAGE}
        )
        lines = page.get("lines") or []
        after = page.get("next", after)
        yield lines, after
        if not lines or after is None:
            return


def _follow(api: ControlApi, run_id: str, stage: str | None, after: Any) -> Iterator[Any]:
    """New lines as the server streams them, until it ends the stream (the run is over)."""
    failures = 0
    with api.client(read_timeout=None) as client:
        while True:
            params = {"stage": stage, "after": after, "follow": "true"}
            params = {key: value for key, value in params.items() if value is not None}
            try:
                with client.stream("GET", f"/api/v1/runs/{run_id}/logs", params=params) as answer:
                    check(answer, api.base_url)
                    for raw in answer.iter_lines():
                        if not raw.strip():
                            continue
                        line = json.loads(raw)
                        failures = 0
                        if "id" in line:
                            after = line["id"]
                        yield line
                return
            except (httpx.HTTPError, ControlPlaneError) as exc:
                if isinstance(exc, ControlPlaneError) and exc.status is not None:
                    raise
                failures += 1
                if failures > RECONNECT_ATTEMPTS:
                    raise api.unreachable(exc) from None
                time.sleep(min(5.0, 0.2 * 2**failures))


def logs(
    run_id: str = typer.Argument(..., help="The run whose logs to show."),
    stage: str | None = typer.Option(None, "--stage", "-s", help="Only this stage's lines."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep showing new lines."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, as stored."),
    server: str | None = server_option(),
) -> None:
    """Show what a run's stages logged and printed (shipped by the workers to the server)."""

    def show(line: dict[str, Any]) -> None:
        text = json.dumps(line) if as_json else format_line(line)
        sys.stdout.write(text + "\n")

    with cli_errors():
        api = ControlApi(server)
        after: Any = None
        for lines, cursor in _pages(api, run_id, stage):
            for line in lines:
                show(line)
            after = cursor
        sys.stdout.flush()
        if follow:
            for line in _follow(api, run_id, stage, after):
                show(line)
                sys.stdout.flush()
