"""`uses: sql` with `remote:`: the query runs on a data-source host over SSH, the export comes back.

The "host" is the test's real sshd on loopback; its SQL client is ``examples/duckdb_cli.py``,
which runs the statement for real in DuckDB against a database file and logs each execution.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import sql_steps
from helpers import finish, pipeline, start, wait_until
from temporalio.client import Client
from transfer.sshd import (
    SshServer,
    sshd_fixture,  # noqa: F401
    sshd_no_rsync_fixture,  # noqa: F401
    sshd_no_rsync_session_server_fixture,  # noqa: F401
    sshd_session_server_fixture,  # noqa: F401
)
from worker_processes import WorkerProcesses

from stageflow.worker.dataplane import DataPlane
from stageflow.worker.runner import StageWorker

HERE = Path(__file__).resolve().parent
SHIM = HERE.parents[1] / "examples" / "duckdb_cli.py"
QUERY = "SELECT id, user_id, amount, tag FROM events WHERE amount % 3 <> 0"


def events(count: int, seed: int = 3) -> list[tuple[int, int, int, str]]:
    rng = random.Random(seed)
    return [
        (i, rng.randint(1, 50), rng.randint(0, 999), f"{rng.getrandbits(128):032x}")
        for i in range(count)
    ]


class SourceHost:
    """The "Server 21" of the test: a DuckDB database reachable over SSH, and its SQL client."""

    def __init__(self, sshd: SshServer, rows: list[tuple[int, int, int, str]]) -> None:
        self.sshd = sshd
        self.database = sshd.scratch / "warehouse.duckdb"
        self.log = sshd.scratch / "executions.log"
        self.staging = sshd.scratch / "staging"
        self.rows = rows
        columns = list(zip(*rows, strict=True))
        table = pa.table(dict(zip(["id", "user_id", "amount", "tag"], columns, strict=True)))
        with duckdb.connect(str(self.database)) as con:
            con.register("incoming", table)
            con.execute("CREATE TABLE events AS SELECT * FROM incoming")

    def remote(self, **extra: Any) -> dict[str, Any]:
        return {
            "host": self.sshd.url(self.staging),
            "cli": f"{sys.executable} {SHIM} {self.database} --log {self.log}",
            "dialect": "duckdb",
            **extra,
        }

    def executions(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def expected(self) -> dict[str, Any]:
        wanted = [row for row in self.rows if row[2] % 3 != 0]
        return {"rows": len(wanted), "digest": sql_steps.rows_digest(wanted)}


def _spec(queue: str, remote: dict[str, Any], **stage: Any) -> Any:
    return pipeline(
        {
            "export": {
                "uses": "sql",
                "queue": queue,
                "with": {"query": QUERY, "remote": remote},
                **stage,
            },
            "check": {
                "uses": "python",
                "queue": queue,
                "needs": ["export"],
                "with": {"function": "sql_steps:digest_rows", "data": "${export.outputs.artifact}"},
            },
        }
    )


def _trust(monkeypatch: pytest.MonkeyPatch, sshd: SshServer) -> None:
    monkeypatch.setenv("STAGEFLOW_TRANSFER_SSH_IDENTITY_FILE", str(sshd.client_key))
    monkeypatch.setenv("STAGEFLOW_TRANSFER_SSH_KNOWN_HOSTS", str(sshd.known_hosts))


async def test_remote_export_is_pulled_verified_and_counted(
    client: Client, queue: str, sshd: SshServer, data_plane: DataPlane, monkeypatch
) -> None:
    _trust(monkeypatch, sshd)
    host = SourceHost(sshd, events(3000))
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, _spec(queue, host.remote())))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    checked = state.stages["check"].outputs
    assert {k: checked[k] for k in ("rows", "digest")} == host.expected()
    outputs = state.stages["export"].outputs
    assert outputs["rows"] == host.expected()["rows"]
    assert outputs["files"] == checked["files"] >= 1
    assert [c["name"] for c in outputs["columns"]] == ["id", "user_id", "amount", "tag"]
    assert host.executions() == 1
    (export,) = host.staging.iterdir()  # kept (no cleanup_remote), marked complete
    assert (export / "_SUCCESS").is_file()


async def test_sftp_host_and_cleanup_of_the_remote_export(
    client: Client, queue: str, sshd_no_rsync: SshServer, data_plane: DataPlane, monkeypatch
) -> None:
    _trust(monkeypatch, sshd_no_rsync)
    host = SourceHost(sshd_no_rsync, events(500, seed=9))
    spec = _spec(queue, host.remote(cleanup_remote=True))
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    checked = state.stages["check"].outputs
    assert {k: checked[k] for k in ("rows", "digest")} == host.expected()
    assert list(host.staging.iterdir()) == []


async def test_a_remote_sql_error_fails_with_the_clients_message(
    client: Client, queue: str, sshd: SshServer, data_plane: DataPlane, monkeypatch
) -> None:
    _trust(monkeypatch, sshd)
    host = SourceHost(sshd, events(10))
    spec = pipeline(
        {
            "export": {
                "uses": "sql",
                "queue": queue,
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
                "with": {"query": "SELECT nope FROM events", "remote": host.remote()},
            }
        }
    )
    async with StageWorker(client, task_queues=[queue], data_plane=data_plane):
        state = await finish(client, await start(client, spec))
    export = state.stages["export"]
    assert export.status == "failed"
    assert "exited with status 1" in (export.error or "")
    assert 'Referenced column "nope" not found' in (export.error or "")
    assert export.attempts == 1 and host.executions() == 1


# --- a worker SIGKILLed mid-pull -----------------------------------------------------------------


def _partials(home: Path) -> list[Path]:
    return [p for p in (home / "staging" / "work").rglob(".*.partial") if p.stat().st_size > 0]


async def test_a_worker_killed_mid_pull_resumes_without_rerunning_the_query(
    client: Client,
    queue: str,
    sshd: SshServer,
    tmp_path: Path,
    worker_processes: WorkerProcesses,
) -> None:
    host = SourceHost(sshd, events(150_000))
    home = tmp_path / "worker-home"  # the restarted worker finds the same staging dir
    env = {
        "STAGEFLOW_TRANSFER_SSH_IDENTITY_FILE": str(sshd.client_key),
        "STAGEFLOW_TRANSFER_SSH_KNOWN_HOSTS": str(sshd.known_hosts),
        "STAGEFLOW_TRANSFER_BANDWIDTH": str(1 << 20),  # a pull of several seconds
    }
    stage = {"heartbeat_timeout": "2s", "retry": {"max_attempts": 3, "initial_interval": "200ms"}}
    first = worker_processes.spawn(
        queue, name="first", home=home, paths=[HERE], new_session=True, **env
    )
    async with StageWorker(client, task_queues=[]):  # the workflow runs here
        run_id = await start(client, _spec(queue, host.remote(), **stage))
        await wait_until(lambda: _partials(home), timeout=60, interval=0.05)
        os.killpg(first.pid, signal.SIGKILL)  # the worker, and its rsync and ssh with it
        first.wait()
        (partial,) = _partials(home)
        kept = partial.stat().st_size
        assert host.executions() == 1
        del env["STAGEFLOW_TRANSFER_BANDWIDTH"]  # the rest may come at full speed
        worker_processes.spawn(
            queue, name="second", home=home, paths=[HERE], new_session=True, **env
        )
        state = await finish(client, run_id, timeout=120)
    assert state.status == "succeeded", {n: s.error for n, s in state.stages.items()}
    assert state.stages["export"].attempts == 2
    assert host.executions() == 1  # the retry found _SUCCESS: the query did not run again
    assert kept > 0
    checked = state.stages["check"].outputs
    assert {k: checked[k] for k in ("rows", "digest")} == host.expected()
