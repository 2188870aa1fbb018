"""Running the `stageflow` command as users do: a real process on a fresh data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


def stageflow(
    *args: str,
    home: Path,
    timeout: float = 120,
    check: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    environment.update(STAGEFLOW_HOME=str(home), PYTHONPATH=str(TESTS), COLUMNS="200")
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "stageflow", *args],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"stageflow {' '.join(args)} -> {result.returncode}\n{result.stderr}\n"
            f"{result.stdout[-6000:]}"
        )
    return result
