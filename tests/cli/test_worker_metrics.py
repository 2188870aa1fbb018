"""`stageflow worker --metrics-port` serves the Temporal SDK's own metrics for Prometheus."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stageflow.engine.devserver import free_port


def test_worker_exports_temporal_sdk_metrics(
    temporal_address: str, queue: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, "TEMPORAL_ADDRESS": temporal_address, "STAGEFLOW_HOME": str(tmp_path)}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stageflow",
            "worker",
            "--queue",
            queue,
            "--metrics-port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        text = ""
        # Worker metrics carry the task queue once its pollers are up.
        while f'task_queue="{queue}"' not in text:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, f"no SDK metrics on :{port}: {text[:500]}"
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            time.sleep(0.3)
        assert "temporal_" in text
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert worker.returncode == 0
