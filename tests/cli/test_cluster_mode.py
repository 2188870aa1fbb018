"""With TEMPORAL_ADDRESS set, `stageflow run` submits to that cluster and starts nothing itself:
`stageflow worker` processes started elsewhere do the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_run_against_a_cluster_is_served_by_separate_workers(
    temporal_address: str, queue: str, tmp_path: Path
) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "name: cluster\n"
        "stages:\n"
        "  make:\n"
        f"    queue: {queue}\n"
        "    uses: python\n"
        "    with: {function: 'hello_steps:make_numbers', count: 3}\n"
        "  total:\n"
        "    needs: [make]\n"
        f"    queue: {queue}\n"
        "    uses: python\n"
        "    with: {function: 'hello_steps:total', values: '${make.outputs.numbers}'}\n"
    )
    home = tmp_path / "home"
    env = {**os.environ, "TEMPORAL_ADDRESS": temporal_address, "STAGEFLOW_HOME": str(home)}
    command = [sys.executable, "-m", "stageflow"]
    worker = subprocess.Popen(
        [*command, "worker", "--queue", queue, "--path", str(REPO / "examples")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        result = subprocess.run(
            [*command, "run", str(spec), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker_output, _ = worker.communicate(timeout=60)
    assert result.returncode == 0, result.stderr + worker_output
    document = json.loads(result.stdout)
    assert document["stages"]["total"]["outputs"] == {"total": 6}
    assert not (home / "temporal").exists()  # no embedded server was started
    assert worker.returncode == 0
    assert f"polling: {queue}" in worker_output
