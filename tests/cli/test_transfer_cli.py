"""`stageflow server`, `stageflow transfer` and `stageflow gc` as processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from transfer.sshd import (
    sshd_fixture,  # noqa: F401
    sshd_session_server_fixture,  # noqa: F401
)

from stageflow.engine.devserver import free_port

TOKEN = "cli-token-" + "c" * 24


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "STAGEFLOW_"))}
    return {**env, "STAGEFLOW_HOME": str(home), **extra}


def stageflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stageflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`stageflow server` on a free port with a generated token; yields (url, its home)."""
    home = tmp_path / "server-home"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "stageflow", "server", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    yield url, home
    process.terminate()
    output, _ = process.communicate(timeout=30)
    assert "generated the deployment token" in output


def test_server_generates_a_private_token_and_refuses_others(server: tuple[str, Path]) -> None:
    url, home = server
    token_file = home / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert httpx.get(f"{url}/v1/staging/status").status_code == 401
    assert (
        httpx.get(
            f"{url}/v1/staging/status", headers={"Authorization": "Bearer nope-" + "n" * 20}
        ).status_code
        == 403
    )
    token = token_file.read_text().strip()
    status = httpx.get(f"{url}/v1/staging/status", headers={"Authorization": f"Bearer {token}"})
    assert status.status_code == 200 and status.json()["disk_free"] > 0


def test_transfer_round_trip_through_ssh_and_the_data_server(
    server: tuple[str, Path], sshd, tmp_path: Path
) -> None:
    url, server_home = server
    token = (server_home / "token").read_text().strip()
    env = _env(
        tmp_path / "client-home",
        STAGEFLOW_TOKEN=token,
        STAGEFLOW_TRANSFER_SSH_IDENTITY_FILE=str(sshd.client_key),
        STAGEFLOW_TRANSFER_SSH_KNOWN_HOSTS=str(sshd.known_hosts),
        STAGEFLOW_DATA_SERVER_URL=url,
    )
    remote = sshd.scratch / "export.bin"
    payload = os.urandom(2 * 1024 * 1024 + 3)
    remote.write_bytes(payload)
    local = tmp_path / "export.bin"

    fetched = stageflow("transfer", sshd.url(remote), str(local), env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert local.read_bytes() == payload

    pushed = stageflow("transfer", str(local), "server", env=env)
    assert pushed.returncode == 0, pushed.stderr
    ref = json.loads(pushed.stdout)
    assert ref["sha256"] == hashlib.sha256(payload).hexdigest() and ref["locations"] == [url]

    back = tmp_path / "back.bin"
    pulled = stageflow("transfer", f"sha256:{ref['sha256']}", str(back), "--from", url, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert back.read_bytes() == payload

    shipped = stageflow("transfer", str(back), sshd.url(sshd.scratch / "again.bin"), env=env)
    assert shipped.returncode == 0, shipped.stderr
    assert (sshd.scratch / "again.bin").read_bytes() == payload

    wrong = stageflow("transfer", str(local), "server", env={**env, "STAGEFLOW_TOKEN": "w" * 30})
    assert wrong.returncode == 1 and "token" in wrong.stderr.lower()

    swept = stageflow("gc", "--dry-run", "--ttl", "1s", env=env)
    assert swept.returncode == 0 and "would remove" in swept.stdout
