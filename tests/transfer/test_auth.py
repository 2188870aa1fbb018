"""The shared token: creation on first start, reuse, the environment override, the check."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from stageflow.errors import ConfigError
from stageflow.transfer.auth import check_bearer, load_or_create_token


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGEFLOW_TOKEN", raising=False)


def test_token_file_is_created_private_then_reused(tmp_path: Path) -> None:
    home = tmp_path / "deep" / "home"
    token, path, created = load_or_create_token(home)
    assert created and path == home / "token"
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 40 and path.read_text().strip() == token
    again, again_path, created_again = load_or_create_token(home)
    assert (again, again_path, created_again) == (token, path, False)
    assert [p.name for p in home.iterdir()] == ["token"], "no temp file left behind"


def test_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGEFLOW_TOKEN", "from-the-environment-123")
    assert load_or_create_token(tmp_path) == ("from-the-environment-123", None, False)
    assert not (tmp_path / "token").exists()


def test_weak_or_exposed_tokens_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEFLOW_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_or_create_token(tmp_path)
    monkeypatch.delenv("STAGEFLOW_TOKEN")
    _, path, _ = load_or_create_token(tmp_path)
    assert path is not None
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_token(tmp_path)


def test_processes_starting_together_agree_on_one_token(tmp_path: Path) -> None:
    results: list[str] = []
    created: list[bool] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        token, _, was_created = load_or_create_token(tmp_path)
        results.append(token)
        created.append(was_created)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert created.count(True) == 1


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Bearer", "missing"),
        ("Bearer ", "missing"),
        ("Basic dXNlcjpwYXNz", "missing"),
        ("Bearer the-right-token-value", None),
        ("bearer the-right-token-value", None),
        ("Bearer the-right-token-valuE", "wrong"),
        ("Bearer the-right-token", "wrong"),
        ("Bearer the-right-token-value-and-more", "wrong"),
        ("Bearer töken", "wrong"),
    ],
)
def test_check_bearer(header: str | None, verdict: str | None) -> None:
    assert check_bearer(header, "the-right-token-value") == verdict
