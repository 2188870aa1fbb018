"""The errors stageflow raises, as one small hierarchy.

Every message says what went wrong and what to do about it::

    StageflowError
    ├── SpecError            a pipeline spec is invalid (carries every issue with file:line)
    ├── ConfigError          settings or the environment are wrong (missing binary, bad address)
    ├── EngineError          Temporal could not be reached or refused a request
    │   └── RunNotFoundError a run id that Temporal does not know
    └── StageError           raised inside a stage; the activity turns it into a Temporal failure
        ├── ExecutorNotFoundError  `uses:` names an executor no worker has
        ├── StageOutputError       a stage returned something that is not small JSON
        ├── ShellCommandFailed     a `shell` stage exited non-zero
        ├── LakeError              a lake write or query was refused (bad name, row count)
        └── TransferError          moving an artifact failed (network errors: retryable)
            ├── AuthError          the peer refused our token or key (not retryable)
            ├── IntegrityError     bytes keep arriving wrong (not retryable)
            └── DiskFullError      no room on the receiving filesystem (not retryable)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthError",
    "ConfigError",
    "DiskFullError",
    "EngineError",
    "ExecutorNotFoundError",
    "IntegrityError",
    "LakeError",
    "RunNotFoundError",
    "ShellCommandFailed",
    "SpecError",
    "SpecIssue",
    "StageError",
    "StageOutputError",
    "StageflowError",
    "TransferError",
]


class StageflowError(Exception):
    """Base class of every error stageflow raises on purpose."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec, located as precisely as the source allows."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class SpecError(StageflowError):
    """A pipeline spec is invalid; ``issues`` lists every problem found, not only the first."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        noun = "problem" if len(issues) == 1 else "problems"
        super().__init__(f"invalid pipeline spec ({len(issues)} {noun}):\n{lines}")


class ConfigError(StageflowError):
    """Settings or the local environment stop stageflow from starting."""


class EngineError(StageflowError):
    """Temporal could not be reached, or refused what was asked of it."""


class RunNotFoundError(EngineError):
    """No run with this id exists in the Temporal namespace."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r}: list runs with `stageflow runs list`")


class StageError(StageflowError):
    """Raised inside a stage. Subclasses mark failures that retrying cannot fix."""

    non_retryable: bool = False


class ExecutorNotFoundError(StageError):
    """``uses:`` names an executor that is not installed where the stage ran."""

    non_retryable = True


class StageOutputError(StageError):
    """A stage returned outputs that cannot travel through Temporal."""

    non_retryable = True


class ShellCommandFailed(StageError):
    """A ``shell`` stage's command exited with a non-zero status."""

    def __init__(self, exit_code: int, tail: str) -> None:
        self.exit_code = exit_code
        detail = f"; last output:\n{tail}" if tail else ""
        super().__init__(f"command exited with status {exit_code}{detail}")


class LakeError(StageError):
    """The lake refused a load or query: a bad name, a row-count mismatch, a read-only query.

    ``status`` is the HTTP status the data server answers with (4xx: the request is wrong, so
    retrying the same request will not help).
    """

    non_retryable = True

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class TransferError(StageError):
    """Moving an artifact failed; plain network trouble is retried."""


class AuthError(TransferError):
    """A peer refused our credentials: fix the token or key, retrying will not help."""

    non_retryable = True


class IntegrityError(TransferError):
    """Data kept failing its hash check: the source is corrupt."""

    non_retryable = True


class DiskFullError(TransferError):
    """The receiving filesystem has no room; nothing partial was left in place."""

    non_retryable = True
