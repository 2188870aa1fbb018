"""``uses: transfer``: move data between this worker, the data server and SSH hosts.

``source`` is an artifact ref (fetched and verified before the stage starts), an
``ssh://user@host:port/path`` on a host that runs nothing of ours, or an absolute path on this
worker; each may be a file or a directory (an SSH directory arrives as a ``dir`` artifact, a
``dir`` artifact leaves for an SSH host as a directory, replacing one already there).
``destination`` is ``server`` (push to the data server), an ``ssh://`` URL, or ``staging`` (the
default: keep it in this worker's store, served to peers). The outputs hold
an ``artifact`` ref (except for an SSH destination), the ``bytes`` moved, ``seconds`` and
``rate`` in bytes/s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from stageflow.errors import ConfigError
from stageflow.executors.base import Executor, ExecutorParams
from stageflow.settings import TransferSettings
from stageflow.transfer.ssh import SshOptions, SshUrl, ssh_download, ssh_upload
from stageflow.worker.context import StageContext

__all__ = ["TransferExecutor"]


class TransferParams(ExecutorParams):
    source: str = Field(
        description="Artifact (arrives as a path), ssh:// URL or absolute path; file or dir."
    )
    destination: str = Field("staging", description="staging, server, or an ssh:// URL.")
    name: str | None = Field(None, description="Name of the resulting artifact.")

    @field_validator("source", "destination")
    @classmethod
    def _ssh_urls_parse(cls, value: str) -> str:
        if value.startswith("ssh://"):
            SshUrl.parse(value)
        return value

    @field_validator("destination")
    @classmethod
    def _known_destination(cls, value: str) -> str:
        if value not in ("staging", "server") and not value.startswith("ssh://"):
            raise ValueError(f"destination {value!r}: use staging, server or ssh://user@host/path")
        return value


class TransferExecutor(Executor):
    name = "transfer"
    Params = TransferParams

    async def run(self, params: TransferParams, ctx: StageContext) -> dict[str, Any]:
        settings = TransferSettings()
        options = SshOptions(
            identity_file=settings.ssh_identity_file,
            known_hosts=settings.ssh_known_hosts,
            bandwidth_limit=settings.bandwidth,
        )
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            ctx.progress(done, total, "bytes")

        if params.source.startswith("ssh://"):
            url = SshUrl.parse(params.source)
            local = ctx.output_dir() / (params.name or Path(url.path).name)
            await ssh_download(url, local, options, progress=progress)
        else:
            local = Path(params.source)
            if not local.is_absolute() or not local.exists():
                raise FileNotFoundError(
                    f"source {params.source!r} is not an existing absolute path"
                )
        size = _size(local)
        outputs: dict[str, Any] = {"bytes": size}
        if params.destination.startswith("ssh://"):
            await ssh_upload(local, params.destination, options, progress=progress)
            outputs["url"] = params.destination
        else:
            ref = await ctx.publish(local, params.name or local.name)
            if params.destination == "server":
                if not ctx.server_url:
                    raise ConfigError("destination `server` needs STAGEFLOW_DATA_SERVER_URL")
                ref = await ctx.data_plane.push(ref, ctx.server_url, keep_local=True)
            outputs["artifact"] = ref
        seconds = time.monotonic() - started
        outputs.update(seconds=round(seconds, 3), rate=round(size / seconds) if seconds else None)
        return outputs


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
