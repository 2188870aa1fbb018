"""The API's admin and read-only tokens: generated once, 0600, never the same, compared safely."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stageflow.errors import ConfigError
from stageflow.server.tokens import Access, ServerTokens, load_server_tokens


def test_both_tokens_are_generated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGEFLOW_TOKEN", raising=False)
    monkeypatch.delenv("STAGEFLOW_SERVER_READ_TOKEN", raising=False)
    first = load_server_tokens(tmp_path)
    assert first.created == (tmp_path / "token", tmp_path / "read-token")
    for path in first.created:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_server_tokens(tmp_path)
    assert second.created == ()
    assert (second.admin, second.read) == (first.admin, first.read)
    assert first.admin != first.read


def test_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGEFLOW_TOKEN", "admin-token-from-env-0123")
    monkeypatch.setenv("STAGEFLOW_SERVER_READ_TOKEN", "read-token-from-env-0123")
    tokens = load_server_tokens(tmp_path)
    assert (tokens.admin, tokens.read) == ("admin-token-from-env-0123", "read-token-from-env-0123")
    assert tokens.admin_file is None and tokens.read_file is None
    assert not (tmp_path / "read-token").exists()


def test_unsafe_or_weak_tokens_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGEFLOW_TOKEN", raising=False)
    monkeypatch.delenv("STAGEFLOW_SERVER_READ_TOKEN", raising=False)
    load_server_tokens(tmp_path)
    (tmp_path / "read-token").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_server_tokens(tmp_path)
    with pytest.raises(ConfigError, match="must differ"):
        ServerTokens(admin="same-token-0123456789", read="same-token-0123456789")
    with pytest.raises(ConfigError, match="at least 16"):
        ServerTokens(admin="short", read="read-token-0123456789")


def test_access() -> None:
    tokens = ServerTokens(admin="admin-token-0123456789", read="read-token-0123456789")
    assert tokens.access("admin-token-0123456789") is Access.ADMIN
    assert tokens.access("read-token-0123456789") is Access.READ
    assert tokens.access("admin-token-012345678") is None
