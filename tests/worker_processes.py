"""`stageflow worker` processes as tests start them: real processes against the test server.

Each worker gets its own ``STAGEFLOW_HOME`` (so its own staging store: no path in common with
another worker) unless a test passes one, the deployment token the in-process data planes use,
and a log file that is printed at teardown so a failure shows why. Every process still running
at the end is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from helpers import TOKEN

TESTS = Path(__file__).resolve().parent


class WorkerProcesses:
    def __init__(self, temporal_address: str, directory: Path) -> None:
        self.temporal_address = temporal_address
        self.directory = directory
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.group_leaders: set[int] = set()

    def home(self, name: str) -> Path:
        return self.directory / f"home-{name}"

    def spawn(
        self,
        *queues: str,
        name: str,
        home: Path | None = None,
        paths: Sequence[Path] = (),
        workflows: bool = False,
        args: Sequence[str] = (),
        new_session: bool = False,  # its own process group: kill it with os.killpg
        split_streams: bool = False,
        **env: str,
    ) -> subprocess.Popen[bytes]:
        """Start ``stageflow worker --queue Q…`` named ``name``; ``env`` adds variables.

        Output goes to ``worker-NAME.log``, or with ``split_streams`` stdout to
        ``worker-NAME.out`` and stderr to ``worker-NAME.err`` (for tests that read one)."""
        environment = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "STAGEFLOW_HOME": str(home or self.home(name)),
            "STAGEFLOW_TOKEN": TOKEN,
            **env,
        }
        argv = [sys.executable, "-m", "stageflow", "worker", "--identity", name]
        for queue in queues:
            argv += ["--queue", queue]
        if not workflows:
            argv.append("--no-workflows")
        for path in [*paths, TESTS]:
            argv += ["--path", str(path)]
        base = self.directory / f"worker-{name}"
        out_path = base.with_suffix(".out" if split_streams else ".log")
        err_path = base.with_suffix(".err")
        with open(out_path, "ab") as out, open(err_path, "ab") as err:
            process = subprocess.Popen(
                [*argv, *args],
                env=environment,
                stdout=out,
                stderr=err if split_streams else subprocess.STDOUT,
                start_new_session=new_session,
            )
        self.started.append((process, out_path))
        if new_session:
            self.group_leaders.add(process.pid)
        if split_streams:
            self.started.append((process, err_path))
        else:
            err_path.unlink(missing_ok=True)
        return process

    def close(self) -> None:
        for process in dict.fromkeys(process for process, _ in self.started):
            if process.pid in self.group_leaders:  # its rsync and ssh too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            elif process.poll() is None:
                process.kill()
            process.wait()
        for log in dict.fromkeys(log for _, log in self.started):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def worker_processes(temporal_address: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(temporal_address, tmp_path)
    yield processes
    processes.close()
