"""A process's share of the data plane: its store, the HTTP server peers fetch from, transfers.

Every worker (and the data server) keeps a content-addressed store and serves it over HTTP, so
a downstream stage on any machine can fetch what an upstream stage wrote from wherever it is.
Stages see none of this: refs in their parameters arrive as local paths, and
``ctx.artifact(path)`` turns a file or directory they wrote into a ref.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from stageflow.errors import ConfigError, TransferError
from stageflow.settings import DataSettings, TransferSettings
from stageflow.transfer import http_client
from stageflow.transfer.artifacts import find_refs, make_ref, map_refs
from stageflow.transfer.http_app import create_data_app
from stageflow.transfer.store import ContentStore

__all__ = ["MAX_UPLOAD_BYTES", "DataPlane", "serve_store"]

MAX_UPLOAD_BYTES = 1 << 40


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its signal handling: the hosting process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Server:
    """A uvicorn server running inside this process's event loop."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = _EmbeddedUvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError("the artifact server stopped while starting")
            await asyncio.sleep(0.01)
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._task is not None:
            self.server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def serve_store(
    store: ContentStore,
    *,
    token: str,
    host: str,
    port: int,
    accept_uploads: bool,
    lake_dir: Path | None = None,
) -> tuple[_Server, int]:
    """Serve ``store`` over the data-plane protocol; returns the server and its port.

    A data server (``accept_uploads``) with a ``lake_dir`` also serves the lake (``/v1/lake``).
    """
    app = create_data_app(
        store,
        token=token,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        accept_uploads=accept_uploads,
        lake_dir=lake_dir,
    )
    server = _Server(app, host, port)
    return server, await server.start()


class DataPlane:
    """This worker's store and artifact server, and the transfers that fill the store."""

    def __init__(
        self,
        *,
        store: ContentStore,
        token: str,
        settings: DataSettings | None = None,
        transfer: TransferSettings | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.settings = settings or DataSettings()
        self.transfer = transfer or TransferSettings()
        self.url: str | None = None
        self._server: _Server | None = None

    @property
    def root(self) -> Path:
        return self.store.root

    async def __aenter__(self) -> DataPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> str:
        """Serve the store to peers; returns the URL they reach it at."""
        self._server, port = await serve_store(
            self.store,
            token=self.token,
            host=self.settings.bind,
            port=self.settings.port,
            accept_uploads=False,
        )
        host = self.settings.bind
        if host in ("0.0.0.0", "::"):
            host = socket.getfqdn()
        self.url = self.settings.advertise or f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    # ------------------------------------------------------------------ stage side
    def work_dir(self, run_id: str, stage_id: str) -> Path:
        """A fresh directory where a stage writes what it will publish."""
        path = self.root / "work" / _safe(run_id) / _safe(stage_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Put a file or directory into the store (hard links where possible) and ref it."""
        path = Path(path)
        if path.is_dir():
            info, kind = self.store.put_dir(path, link=True), "dir"
        elif path.is_file():
            info, kind = self.store.put_file(path, link=True), "file"
        else:
            raise FileNotFoundError(f"cannot publish {path}: no such file or directory")
        locations = [self.url] if self.url else []
        return make_ref(
            sha256=info.sha256,
            size=info.size,
            name=name or path.name,
            kind=kind,
            locations=locations,
        )

    async def fetch(self, ref: dict[str, Any], progress: Any = None) -> None:
        """Bring the object (and a directory's files) of ``ref`` into the store."""
        options = {**self._transfer_options(), "progress": progress}
        if self._holds(ref):
            return
        locations = [loc for loc in ref["locations"] if loc != self.url]
        if not locations:
            raise TransferError(
                f"no reachable copy of artifact {ref.get('name')!r} ({ref['sha256'][:12]}): "
                f"its only location is this worker ({self.url}), whose store lacks it"
            )
        if ref["kind"] == "dir":
            await http_client.fetch_dir(ref["sha256"], locations, self.store, **options)
        else:
            await http_client.download(ref["sha256"], locations, self.store, **options)

    def _transfer_options(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "streams": self.transfer.streams,
            "bandwidth": self.transfer.bandwidth,
            "compress": self.transfer.compress,
        }

    def _holds(self, ref: dict[str, Any]) -> bool:
        if not self.store.has(ref["sha256"]):
            return False
        if ref["kind"] != "dir":
            return True
        manifest = self.store.dir_manifest(ref["sha256"])
        return all(self.store.has(entry.sha256) for entry in manifest.entries)

    async def materialize(
        self, params: Any, run_id: str, stage_id: str, *, as_path: bool, progress: Any = None
    ) -> Any:
        """``params`` with every ref replaced by a local path to a verified copy of its data."""
        inputs = self.root / "inputs" / _safe(run_id) / _safe(stage_id)
        placed: dict[str, Path] = {}

        async def place(ref: dict[str, Any]) -> None:
            key = ref["sha256"]
            if key in placed:
                return
            await self.fetch(ref, progress)
            dest = inputs / key[:12] / _safe(ref.get("name") or key[:12])
            if not dest.exists():
                await asyncio.to_thread(self.store.materialize, key, ref["kind"], dest)
            placed[key] = dest

        for ref in find_refs(params):
            await place(ref)
        return map_refs(
            params, lambda ref: placed[ref["sha256"]] if as_path else str(placed[ref["sha256"]])
        )

    async def push(
        self, ref: dict[str, Any], server_url: str, *, keep_local: bool
    ) -> dict[str, Any]:
        """Upload ``ref``'s data to the data server; returns the ref with the server's location.

        Once the server holds a verified copy the staging copy can go (``keep_local=False``).
        """
        options = self._transfer_options()
        shas = [ref["sha256"]]
        if ref["kind"] == "dir":
            manifest = self.store.dir_manifest(ref["sha256"])
            shas = [entry.sha256 for entry in manifest.entries] + shas  # manifest last
        for sha in dict.fromkeys(shas):
            await http_client.upload(sha, self.store, server_url, **options)
        locations = [loc for loc in ref["locations"] if keep_local or loc != self.url]
        if not keep_local:
            for sha in dict.fromkeys(shas):
                self.store.remove(sha)
        return {
            **ref,
            "locations": [*locations, server_url] if server_url not in locations else locations,
        }

    def clean_run(self, run_id: str, *, keep_stage: str | None = None) -> None:
        """Remove every work and input dir of ``run_id`` here, but ``keep_stage``'s own."""
        for part in ("work", "inputs"):
            directory = self.root / part / _safe(run_id)
            if not directory.is_dir():
                continue
            for stage_dir in directory.iterdir():
                if keep_stage is None or stage_dir.name != _safe(keep_stage):
                    shutil.rmtree(stage_dir, ignore_errors=True)

    def clean_stage(self, run_id: str, stage_id: str) -> None:
        """Remove a finished stage's work and input dirs (its objects stay in the store)."""
        for part in ("work", "inputs"):
            shutil.rmtree(self.root / part / _safe(run_id) / _safe(stage_id), ignore_errors=True)


def _safe(name: str) -> str:
    """A path component from a run/stage/artifact name: no separators, no dot-dot."""
    cleaned = "".join(c if c.isalnum() or c in "-_.[]" else "_" for c in name).strip(".")
    return cleaned or "_"
