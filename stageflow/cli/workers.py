"""``stageflow workers``: the workers the control plane knows, with hardware, cost, load and state.

Workers register and heartbeat themselves (``worker/registry.py``); the server shows a worker
whose heartbeats stopped as ``lost``.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from stageflow.cli.common import console
from stageflow.cli.control_api import ControlApi, cli_errors, server_option

__all__ = ["workers"]

_STATE_STYLE = {"alive": "green", "draining": "yellow", "stopped": "dim", "lost": "red"}


def _bytes(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"  # pragma: no cover - the loop always returns


def _load(load: Any) -> str:
    if not isinstance(load, dict):
        return "-"
    parts = []
    if load.get("cpu_percent") is not None:
        parts.append(f"cpu {load['cpu_percent']:.0f}%")
    if load.get("memory_percent") is not None:
        parts.append(f"mem {load['memory_percent']:.0f}%")
    if load.get("gpu_util"):
        parts.append("gpu " + "/".join(f"{u:.0f}%" for u in load["gpu_util"]))
    if load.get("disk_free_bytes") is not None:
        parts.append(f"{_bytes(load['disk_free_bytes'])} free")
    return ", ".join(parts) or "-"


def worker_table(listed: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("WORKER", "STATE", "QUEUES", "TAGS", "CPUS", "MEMORY", "GPUS", "$/H"):
        table.add_column(column, no_wrap=True)
    table.add_column("RUNNING", justify="right", no_wrap=True)
    table.add_column("LOAD", no_wrap=True)
    table.add_column("LAST BEAT", justify="right", no_wrap=True)
    for worker in listed:
        state = str(worker.get("state", "?"))
        gpus = worker.get("gpus") or []
        names = sorted({str(gpu.get("name", "")) for gpu in gpus})
        cost = worker.get("cost_per_hour")
        load = worker.get("load") or {}
        since = worker.get("seconds_since_heartbeat")
        table.add_row(
            str(worker.get("worker_id", "?")),
            f"[{_STATE_STYLE.get(state, '')}]{state}[/]" if state in _STATE_STYLE else state,
            ",".join(worker.get("queues") or []) or "-",
            ",".join(worker.get("tags") or []) or "-",
            str(worker.get("cpus") or "-"),
            _bytes(worker.get("memory_bytes")),
            f"{len(gpus)} x {', '.join(names)}" if gpus else "-",
            f"{cost:g}" if isinstance(cost, int | float) else "-",
            str(load.get("running_stages", "-")),
            _load(load),
            f"{since:.0f}s ago" if isinstance(since, int | float) else "-",
        )
    return table


def workers(
    state: str | None = typer.Option(
        None, "--state", help="Only workers in this state: alive, draining, stopped, lost."
    ),
    as_json: bool = typer.Option(False, "--json", help="The server's JSON, as is."),
    server: str | None = server_option(),
) -> None:
    """List the workers registered with the control plane."""
    with cli_errors():
        document = ControlApi(server).get("/api/v1/workers", {"state": state})
    if as_json:
        print(json.dumps(document, indent=2))
        return
    listed = document.get("workers") or []
    if not listed:
        console.print("no workers have registered with this control plane")
        return
    # Piped (to grep, say), rows stay whole lines instead of being cut to 80 columns.
    width = None if console.is_terminal else 1000
    console.print(worker_table(listed), width=width)
