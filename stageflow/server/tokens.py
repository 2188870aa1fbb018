"""The API's two bearer tokens and what each may do.

**admin** is the deployment token (``STAGEFLOW_TOKEN`` or ``<home>/token``) that workers
already hold, so worker ingestion needs nothing new. **read-only** (``STAGEFLOW_SERVER_READ_TOKEN``
or ``<home>/read-token``, generated beside it) is for dashboards and Prometheus: GET only.
Neither has a default value; files are created 0600, atomically, first writer wins.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from stageflow.errors import ConfigError
from stageflow.transfer.auth import load_or_create_token

__all__ = ["READ_TOKEN_ENV", "Access", "ServerTokens", "load_server_tokens"]

READ_TOKEN_ENV = "STAGEFLOW_SERVER_READ_TOKEN"
_MIN_LENGTH = 16


class Access(Enum):
    ADMIN = "admin"
    READ = "read"


@dataclass(frozen=True)
class ServerTokens:
    admin: str
    read: str
    admin_file: Path | None = None
    read_file: Path | None = None
    created: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        for name, value in (("admin", self.admin), ("read-only", self.read)):
            if len(value) < _MIN_LENGTH:
                raise ConfigError(f"the {name} token must be at least {_MIN_LENGTH} characters")
        if hmac.compare_digest(self.admin.encode(), self.read.encode()):
            raise ConfigError(
                f"the read-only token ({READ_TOKEN_ENV}) must differ from the admin token"
            )

    def access(self, given: str) -> Access | None:
        """What ``given`` may do; both comparisons always run, in constant time."""
        raw = given.encode()
        is_admin = hmac.compare_digest(raw, self.admin.encode())
        is_read = hmac.compare_digest(raw, self.read.encode())
        if is_admin:
            return Access.ADMIN
        return Access.READ if is_read else None


def _read_token(home: Path, from_settings: str | None) -> tuple[str, Path | None, bool]:
    given = from_settings or os.environ.get(READ_TOKEN_ENV)
    if given:
        return given.strip(), None, False
    path = Path(home) / "read-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    created = False
    if not path.exists():
        tmp = path.with_name(f".read-token.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
                created = True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} is readable or writable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return path.read_text(encoding="ascii", errors="replace").strip(), path, created


def load_server_tokens(home: Path, read_token: str | None = None) -> ServerTokens:
    """The admin and read-only tokens, generating the files that are missing."""
    admin, admin_file, admin_created = load_or_create_token(home)
    read, read_file, read_created = _read_token(home, read_token)
    created = tuple(
        path
        for path, made in ((admin_file, admin_created), (read_file, read_created))
        if made and path is not None
    )
    return ServerTokens(admin, read, admin_file, read_file, created)
