"""``sql`` with ``remote:``: export on a data-source host that runs nothing of ours, pull over SSH.

The host's own SQL client (``cli``, reading the statement on stdin) writes the result as
parquet into a fresh directory under the staging dir of ``remote.host``; a ``_SUCCESS`` marker
written afterwards says the export is complete. The directory name is derived from the stage
and the query, not the attempt, so a retry that finds ``_SUCCESS`` skips the query and only
pulls. Files come back one by one with the SSH transport (``ssh_download``: rsync or SFTP,
resuming into ``.<name>.partial``, sha256 checked on both ends) into a pull directory kept
across attempts on this worker, so a retry re-sends only what had not arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import posixpath
import re
import shutil
from pathlib import Path

from stageflow.executors.parquet_io import part_name
from stageflow.executors.sql import RemoteOptions, sql_failed
from stageflow.settings import TransferSettings
from stageflow.transfer._ssh_remote import RemoteHost, connect, map_errors, permanent
from stageflow.transfer.ssh import SshOptions, SshUrl, ssh_download
from stageflow.worker.context import StageContext

__all__ = ["export_remote", "export_statement"]

SUCCESS = "_SUCCESS"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
# "<size> <name>" for each visible regular file directly in $1 (no find: busybox hosts).
_LIST_SH = """
for f in "$1"/*; do
  [ -f "$f" ] || continue
  case "${f##*/}" in _*|*.crc) continue;; esac
  printf '%s %s\\n' "$(($(wc -c < "$f")))" "${f##*/}"
done
"""


def export_statement(dialect: str, query: str, directory: str) -> str:
    """``query`` wrapped in the statement that makes ``dialect``'s client write it as parquet."""
    query = query.strip().rstrip(";").strip()
    target = "'" + directory + "'"  # RemoteOptions refuses quotes and backslashes in the path
    if dialect == "duckdb":
        options = "FORMAT parquet, COMPRESSION zstd, PER_THREAD_OUTPUT true"
        return f"COPY (\n{query}\n) TO {target} ({options});\n"
    if dialect == "spark":
        return (
            f"INSERT OVERWRITE LOCAL DIRECTORY {target} USING parquet "
            f"OPTIONS (compression 'zstd')\n{query};\n"
        )
    if dialect == "hive":
        return f"INSERT OVERWRITE LOCAL DIRECTORY {target} STORED AS PARQUET\n{query};\n"
    raise ValueError(f"unknown dialect {dialect!r}")


def _options() -> SshOptions:
    """The same keys, known_hosts and bandwidth as the ``transfer`` executor's."""
    settings = TransferSettings()
    return SshOptions(
        identity_file=settings.ssh_identity_file,
        known_hosts=settings.ssh_known_hosts,
        bandwidth_limit=settings.bandwidth,
    )


async def export_remote(
    query: str, remote: RemoteOptions, ctx: StageContext, out: Path
) -> list[Path]:
    """Export on the remote host (unless a finished export is there), pull it into ``out``."""
    url = SshUrl.parse(remote.host)
    opts = _options()
    key = json.dumps([ctx.stage_id, remote.dialect, query])
    folder = f"stageflow-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    export = posixpath.join(url.path, folder)
    async with connect(url, opts) as host:
        if (await host.stat(posixpath.join(export, SUCCESS))).kind == "file":
            ctx.logger.info("%s:%s already holds this export: pulling it", url.address, export)
        else:
            await _run_export(host, remote, url, query, export)
        listing = await _list(host, export)
    pull = out.parent / f".{out.name}.pull-{folder}"
    await _pull(url, export, listing, pull, opts, ctx)
    files = await asyncio.to_thread(_assemble, pull, [name for name, _ in listing], out)
    if remote.cleanup_remote:
        async with connect(url, opts) as host:
            await host.run_script('rm -rf -- "$1"', export)
    return files


async def _run_export(
    host: RemoteHost, remote: RemoteOptions, url: SshUrl, query: str, export: str
) -> None:
    """Run the export statement through ``cli``, then mark the directory complete."""
    # A failed earlier attempt may have left half an export: start clean.
    await host.run_script('rm -rf -- "$1" && mkdir -p -- "$2"', export, url.path)
    statement = export_statement(remote.dialect, query, export)
    who = f"{remote.cli!r} on {url.address}"
    with map_errors(url):
        result = await host.conn.run(remote.cli, input=statement, check=False)
    if result.exit_status != 0:
        tail = str(result.stderr or result.stdout or "").strip()[-4000:]
        raise sql_failed(f"{who} exited with status {result.exit_status}: {tail}")
    await host.run_script(f'[ -d "$1" ] || mkdir -p -- "$1"; : > "$1/{SUCCESS}"', export)


async def _list(host: RemoteHost, export: str) -> list[tuple[str, int]]:
    """The export's data files and sizes; names from the remote are checked, not trusted."""
    listing = []
    for line in (await host.run_script(_LIST_SH, export)).splitlines():
        size, _, name = line.strip().partition(" ")
        if not size.isdigit() or not _NAME.match(name):
            raise permanent(f"{host.url.address}:{export}: unexpected file entry {line!r}")
        if int(size) > 0:  # Hive writes empty files for empty buckets
            listing.append((name, int(size)))
    if not listing:
        raise permanent(f"{host.url.address}:{export}: the export wrote no data files")
    return sorted(listing)


async def _pull(
    url: SshUrl,
    export: str,
    listing: list[tuple[str, int]],
    pull: Path,
    opts: SshOptions,
    ctx: StageContext,
) -> None:
    """Download every file not already here; a committed file was verified when it landed."""
    total = sum(size for _, size in listing)
    done = 0
    for name, size in listing:
        dest = pull / name
        if not (dest.is_file() and dest.stat().st_size == size):

            def progress(now: int, _total: int, before: int = done) -> None:
                ctx.progress(before + now, total, "bytes")

            source = dataclasses.replace(url, path=posixpath.join(export, name))
            await ssh_download(source, dest, opts, progress=progress)
        done += size
        ctx.progress(done, total, "bytes")


def _assemble(pull: Path, names: list[str], out: Path) -> list[Path]:
    """Hard-link the pulled files into ``out`` as ``part_N.parquet``; drop the pull dir."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = []
    for index, name in enumerate(names):
        final = out / part_name(index)
        os.link(pull / name, final)
        files.append(final)
    shutil.rmtree(pull)
    return files
