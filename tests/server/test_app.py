"""``stageflow server`` as users run it: a subprocess with its own tokens, DB and Temporal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_server import serve_in_thread

from stageflow.engine.devserver import free_port
from stageflow.server.app import create_server_app
from stageflow.transfer.store import ContentStore


def _wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def test_cli_server_generates_tokens_and_serves_the_api(
    tmp_path: Path, temporal_address: str
) -> None:
    home, port = tmp_path / "home", free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STAGEFLOW_", "TEMPORAL_"))
    }
    env |= {"STAGEFLOW_HOME": str(home), "TEMPORAL_ADDRESS": temporal_address}
    database = tmp_path / "db" / "control.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stageflow",
            "server",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{database}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        admin = (home / "token").read_text().strip()
        read = (home / "read-token").read_text().strip()
        assert database.exists()
        assert httpx.get(f"{url}/api/v1/runs").status_code == 401
        listed = httpx.get(f"{url}/api/v1/runs", headers={"Authorization": f"Bearer {read}"})
        assert listed.status_code == 200 and isinstance(listed.json()["runs"], list)
        answer = httpx.post(
            f"{url}/api/v1/workers/register",
            json={"worker_id": "w", "host": "h"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert answer.status_code == 200
        assert httpx.get(f"{url}/v1/healthz").json() == {"ok": True}  # the data server too
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert f"admin token: {home / 'token'}" in err
    assert f"read-only token: {home / 'read-token'}" in err
    assert admin not in out + err and read not in out + err  # paths are printed, never tokens


def test_without_control_config_the_app_is_the_data_server(tmp_path: Path) -> None:
    app = create_server_app(ContentStore(tmp_path), token="t" * 32, max_upload_bytes=1)
    with serve_in_thread(app) as live:
        assert httpx.get(f"{live.url}/v1/healthz").json() == {"ok": True}
        assert httpx.get(f"{live.url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{live.url}/api/v1/runs").status_code == 404


@pytest.fixture
def temporal_address(temporal_env) -> str:  # type: ignore[no-untyped-def]
    return str(temporal_env.client.service_client.config.target_host)
