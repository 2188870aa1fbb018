"""``stageflow transfer SRC DST`` and ``stageflow gc``: the data plane from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from stageflow.cli.common import EXIT_INVALID, console, err_console, run_async
from stageflow.cli.dataplane import deployment_token, staging_store
from stageflow.settings import DataSettings, EngineSettings, TransferSettings
from stageflow.spec.durations import parse_duration
from stageflow.transfer import http_client
from stageflow.transfer.gc import collect_garbage
from stageflow.transfer.ssh import SshOptions, ssh_download, ssh_upload

_SHA_SOURCE = re.compile(r"^sha256:([0-9a-f]{64})$")


def transfer(
    source: str = typer.Argument(
        ..., help="A local path, ssh://user@host:port/path, or sha256:<hex>."
    ),
    destination: str = typer.Argument(..., help="A local path, ssh://… URL, or `server`."),
    from_url: list[str] = typer.Option(
        [], "--from", help="Where a sha256: source is (repeatable)."
    ),
    server: str | None = typer.Option(
        None, help="Data server URL (default STAGEFLOW_DATA_SERVER_URL)."
    ),
) -> None:
    """Move a file between this machine, SSH hosts and the data server, verified and resumable."""
    settings, transfer_settings = EngineSettings(), TransferSettings()
    ssh = SshOptions(
        identity_file=transfer_settings.ssh_identity_file,
        known_hosts=transfer_settings.ssh_known_hosts,
        bandwidth_limit=transfer_settings.bandwidth,
    )
    http: dict[str, Any] = {
        "streams": transfer_settings.streams,
        "bandwidth": transfer_settings.bandwidth,
        "compress": transfer_settings.compress,
    }
    server_url = server or DataSettings().server_url

    async def main() -> dict[str, Any]:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{source} → {destination}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return await _move(source, destination, progress)

    async def _move(src: str, dst: str, progress: Any) -> dict[str, Any]:
        sha_source = _SHA_SOURCE.match(src)
        if sha_source:
            store = staging_store(settings)
            token = deployment_token(settings.home)
            locations = from_url or ([server_url] if server_url else [])
            if not locations:
                raise typer.BadParameter("a sha256: source needs --from URL", param_hint="--from")
            path = await http_client.download(
                sha_source.group(1), locations, store, token=token, progress=progress, **http
            )
            local = Path(dst)
            store.materialize(sha_source.group(1), "file", local)
            return {"path": str(local), "bytes": path.stat().st_size}
        if src.startswith("ssh://"):
            if dst.startswith("ssh://") or dst == "server":
                raise typer.BadParameter("download ssh:// sources to a local path first")
            await ssh_download(src, Path(dst), ssh, progress=progress)
            return {"path": dst, "bytes": Path(dst).stat().st_size}
        local = Path(src)
        if not local.is_file():
            raise typer.BadParameter(f"{src} is not a file")
        if dst.startswith("ssh://"):
            await ssh_upload(local, dst, ssh, progress=progress)
            return {"url": dst, "bytes": local.stat().st_size}
        if dst == "server":
            if not server_url:
                raise typer.BadParameter(
                    "set --server or STAGEFLOW_DATA_SERVER_URL", param_hint="--server"
                )
            store = staging_store(settings)
            token = deployment_token(settings.home)
            info = store.put_file(local)
            await http_client.upload(
                info.sha256, store, server_url, token=token, progress=progress, **http
            )
            return {
                "sha256": info.sha256,
                "size": info.size,
                "name": local.name,
                "kind": "file",
                "locations": [server_url],
            }
        raise typer.BadParameter(
            f"unknown destination {dst!r}: a local path only with a sha256: or ssh:// source"
        )

    result = run_async(main)
    print(json.dumps(result))


def gc(
    ttl: str | None = typer.Option(None, help="Age after which unreferenced data goes (e.g. 7d)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would go."),
) -> None:
    """Remove unreferenced staging data older than the TTL (STAGEFLOW_DATA_GC_TTL, 7 days)."""
    try:
        seconds = parse_duration(ttl) if ttl else DataSettings().gc_ttl
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] --ttl: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    report = collect_garbage(staging_store(EngineSettings()), ttl=seconds, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb}: {len(report.removed_runs)} run dirs, {report.removed_objects} objects, "
        f"{report.removed_partials} partial transfers ({report.freed_bytes / 1e6:.1f} MB)"
    )
