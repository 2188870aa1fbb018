"""Running the `stageflow` command as users do: a real process on a fresh data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def stageflow(
    *args: str, home: Path, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env.update(STAGEFLOW_HOME=str(home), PYTHONPATH=str(TESTS), COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-m", "stageflow", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"stageflow {' '.join(args)} -> {result.returncode}\n{result.stderr}")
    return result
