"""The deployment's shared bearer token: where it comes from and how it is checked.

One token per deployment (every worker and the data server) keeps setup to one step: start
the first process, copy the file it printed, or set ``STAGEFLOW_TOKEN`` everywhere. The file is
created atomically with mode 0600 (so two processes starting at once agree on one token), a
token file others can read is refused, and comparison is constant-time.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Literal

from stageflow.errors import ConfigError

__all__ = ["TOKEN_ENV", "check_bearer", "load_or_create_token"]

TOKEN_ENV = "STAGEFLOW_TOKEN"
_MIN_LENGTH = 16


def _checked(token: str, source: str) -> str:
    token = token.strip()
    if (
        len(token) < _MIN_LENGTH
        or not token.isascii()
        or not token.isprintable()
        or (any(c.isspace() for c in token))
    ):
        raise ConfigError(
            f"the token from {source} must be at least {_MIN_LENGTH} printable ASCII characters "
            "with no spaces; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return token


def load_or_create_token(home: Path) -> tuple[str, Path | None, bool]:
    """Return ``(token, token_file, created)``.

    ``STAGEFLOW_TOKEN`` wins (``token_file`` is then None). Otherwise ``<home>/token`` is read,
    or created with ``secrets.token_urlsafe(32)`` and mode 0600 (parent dirs too) when absent.
    """
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return _checked(from_env, TOKEN_ENV), None, False
    path = Path(home) / "token"
    path.parent.mkdir(parents=True, exist_ok=True)
    created = False
    if not path.exists():
        created = _create(path, secrets.token_urlsafe(32))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} is readable or writable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return _checked(path.read_text(encoding="ascii", errors="replace"), str(path)), path, created


def _create(path: Path, token: str) -> bool:
    """Write the token beside ``path`` and link it into place: all or nothing, first one wins."""
    tmp = path.with_name(f".token.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False  # another process created it first; use theirs
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def check_bearer(header_value: str | None, token: str) -> Literal["missing", "wrong"] | None:
    """None when ``Authorization: Bearer <token>`` matches; else what is wrong with it."""
    if not header_value:
        return "missing"
    scheme, _, given = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "missing"
    if hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    return "wrong"
