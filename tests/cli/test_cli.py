"""The `stageflow` command as users run it: real processes, embedded engine, fresh data dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from cli_run import REPO, TESTS, stageflow


def temporal_servers_using(home: Path) -> list[psutil.Process]:
    """Temporal dev servers whose database lives under ``home``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "start-dev" in cmdline and any(str(home) in part for part in cmdline):
            found.append(process)
    return found


def write_spec(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_hello_runs_on_a_fresh_data_dir_and_leaves_no_server(tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    result = stageflow("run", "examples/hello.yaml", "--json", home=home, check=True)
    document = json.loads(result.stdout)
    assert document["status"] == "succeeded"
    assert list(document["stages"]) == ["make", "square", "total", "report"]
    assert document["stages"]["square"]["outputs"] == [{"value": 1}, {"value": 4}, {"value": 9}]
    assert document["stages"]["total"]["outputs"] == {"total": 14}
    assert document["stages"]["report"]["outputs"] == {"exit_code": 0, "printed": True}
    assert (home / "temporal" / "temporal.sqlite").exists()
    assert temporal_servers_using(home) == []
    # The run is durable: a later command on the same data dir still lists it.
    listed = json.loads(stageflow("runs", "list", "--json", home=home, check=True).stdout)
    assert [run["run_id"] for run in listed] == [document["run_id"]]
    assert listed[0]["status"] == "succeeded"


def test_params_override_and_human_output(tmp_path: Path) -> None:
    result = stageflow("run", "examples/hello.yaml", "-p", "n=4", home=tmp_path, check=True)
    assert "succeeded" in result.stdout
    shown = stageflow("runs", "list", "--json", home=tmp_path, check=True)
    run_id = json.loads(shown.stdout)[0]["run_id"]
    state = json.loads(
        stageflow("runs", "show", run_id, "--json", home=tmp_path, check=True).stdout
    )
    assert state["stages"]["total"]["outputs"] == {"total": 1 + 4 + 9 + 16}


def test_unknown_param_is_refused(tmp_path: Path) -> None:
    result = stageflow("run", "examples/hello.yaml", "-p", "m=4", home=tmp_path / "h")
    assert result.returncode == 2
    assert "unknown param" in result.stderr and "m" in result.stderr
    assert not (tmp_path / "h").exists()


def test_failed_run_exits_non_zero_with_the_error(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        "fails.yaml",
        "name: fails\n"
        "stages:\n"
        "  boom:\n"
        "    uses: shell\n"
        "    retry: {max_attempts: 1}\n"
        "    with: {command: 'echo about to fail; exit 3'}\n",
    )
    result = stageflow("run", str(spec), "--json", home=tmp_path)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["status"] == "failed"
    assert document["stages"]["boom"]["status"] == "failed"
    human = stageflow("run", str(spec), home=tmp_path)
    assert human.returncode == 1
    assert "status 3" in human.stderr and "about to fail" in human.stderr


def test_invalid_spec_is_rejected_with_file_line_and_field(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        "bad.yaml",
        "name: bad\n"
        "stages:\n"
        "  a:\n"
        "    uses: python\n"
        "    timeout: 10x\n"
        "    with: {function: 'steps:numbers', count: '${params.missing}'}\n",
    )
    home = tmp_path / "home"
    for command in ("validate", "run"):
        result = stageflow(command, str(spec), home=home)
        assert result.returncode == 2, result.stderr
        assert f"{spec}:5:14: stages.a.timeout: invalid duration '10x'" in result.stderr
        assert f"{spec}:6:" in result.stderr and "unknown param" in result.stderr
    assert not home.exists()  # nothing started


def test_validate_accepts_the_examples(tmp_path: Path) -> None:
    result = stageflow("validate", *map(str, sorted(REPO.glob("examples/*.yaml"))), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_leaves_no_server_behind(tmp_path: Path, sig: signal.Signals) -> None:
    spec = write_spec(
        tmp_path,
        "slow.yaml",
        "name: slow\nstages:\n  wait:\n    uses: shell\n    with: {command: 'sleep 60'}\n",
    )
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env["STAGEFLOW_HOME"] = str(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "stageflow", "run", str(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # the run is under way once its stage runs
        if "wait: running" in line:
            break
    assert temporal_servers_using(home)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert process.returncode == 130, stderr
        assert "runs cancel" in stderr
    deadline = time.monotonic() + 10
    while temporal_servers_using(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert temporal_servers_using(home) == []


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Path]:
    """`stageflow up` on a fresh data dir; yields the data dir."""
    home = tmp_path / "up-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env.update(STAGEFLOW_HOME=str(home), PYTHONPATH=str(TESTS))
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "stageflow", "up", "--ui-port", "0", "--path", str(TESTS)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not (home / "temporal" / "server.json").exists():
        assert process.poll() is None, (tmp_path / "up.log").read_text()
        assert time.monotonic() < deadline, "stageflow up did not start"
        time.sleep(0.1)
    time.sleep(1)
    yield home
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    log.close()
    assert temporal_servers_using(home) == []


def wait_for_status(home: Path, run_id: str, stage: str | None, status: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        shown = stageflow("runs", "show", run_id, "--json", home=home)
        if shown.returncode == 0:
            state = json.loads(shown.stdout)
            current = state["stages"][stage]["status"] if stage else state["status"]
            if current == status:
                return state
        assert time.monotonic() < deadline, f"{run_id} {stage or ''} never became {status}"
        time.sleep(0.3)


def test_up_serves_detached_runs_that_runs_commands_steer(up: Path, tmp_path: Path) -> None:
    gated = write_spec(
        tmp_path,
        "gated.yaml",
        "name: gated\n"
        "stages:\n"
        "  prep:\n"
        "    uses: python\n"
        "    with: {function: 'steps:numbers', count: 2}\n"
        "  ship:\n"
        "    needs: [prep]\n"
        "    gate: approve\n"
        "    uses: python\n"
        "    with: {function: 'steps:total', values: '${prep.outputs.numbers}'}\n",
    )
    run_id = stageflow("run", str(gated), "--detach", home=up, check=True).stdout.strip()
    wait_for_status(up, run_id, "ship", "waiting_approval")
    stageflow("runs", "approve", run_id, "--stage", "ship", home=up, check=True)
    state = wait_for_status(up, run_id, None, "succeeded")
    assert state["stages"]["ship"]["outputs"]["total"] == 3

    slow = write_spec(
        tmp_path,
        "slow.yaml",
        "name: slow\n"
        "stages:\n"
        "  wait:\n"
        "    uses: shell\n"
        "    with: {command: 'sleep 60'}\n"
        "  after:\n"
        "    needs: [wait]\n"
        "    uses: shell\n"
        "    with: {command: 'true'}\n",
    )
    run_id = stageflow("run", str(slow), "--detach", home=up, check=True).stdout.strip()
    wait_for_status(up, run_id, "wait", "running")
    stageflow("runs", "pause", run_id, home=up, check=True)
    wait_for_status(up, run_id, None, "paused")
    stageflow("runs", "resume", run_id, home=up, check=True)
    wait_for_status(up, run_id, None, "running")
    stageflow("runs", "cancel", run_id, home=up, check=True)
    state = wait_for_status(up, run_id, None, "cancelled")
    assert state["stages"]["after"]["status"] == "cancelled"
    listed = json.loads(stageflow("runs", "list", "--json", home=up, check=True).stdout)
    assert {run["pipeline"] for run in listed} == {"gated", "slow"}


def test_runs_retry_finishes_a_failed_run_from_its_failed_stage(tmp_path: Path) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    spec = write_spec(
        tmp_path,
        "retry.yaml",
        "name: retryme\n"
        "stages:\n"
        "  first:\n"
        "    uses: python\n"
        f"    with: {{function: 'steps:fail_while_flag', log_dir: '{log_dir}', name: first,"
        f" flag: '{tmp_path}/never'}}\n"
        "  second:\n"
        "    needs: [first]\n"
        "    uses: python\n"
        "    retry: {max_attempts: 1}\n"
        f"    with: {{function: 'steps:fail_while_flag', log_dir: '{log_dir}', name: second,"
        f" flag: '{flag}'}}\n",
    )
    failed = stageflow("run", str(spec), "--json", home=tmp_path)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    flag.unlink()
    retried = stageflow("runs", "retry", run_id, "--json", home=tmp_path)
    assert retried.returncode == 0, retried.stderr
    document = json.loads(retried.stdout)
    assert document["run_id"] == run_id and document["status"] == "succeeded"
    assert len((log_dir / "first.jsonl").read_text().splitlines()) == 1
    assert len((log_dir / "second.jsonl").read_text().splitlines()) == 2
