"""Capture of everything a stage logs or prints, line by line, tagged with the stage it came from.

Why it works this way: one worker process runs many stages at once, async ones on the event
loop and sync ones in threads, so "what did this stage print" cannot be answered by redirecting
a file descriptor. Instead the stage activity sets a context variable (``stage_scope``) naming
the running stage; asyncio tasks and ``asyncio.to_thread`` copy context variables, so a
``print()`` or a logger call anywhere beneath a stage knows which stage it belongs to. Once per
process ``LogCapture.install`` puts

* a proxy in front of ``sys.stdout`` and ``sys.stderr`` that routes a write to the current
  stage (split into lines) and passes any other write through to the real stream, and
* a ``logging.Handler`` on the ``stageflow.stage`` logger tree (``ctx.logger``) and on the root
  logger (a stage's own loggers), which takes the records emitted inside a stage.

Every captured line gets the next number of a per-process sequence (``seq``) and the process's
``stream_id`` (a uuid4 per start), which together make shipping idempotent, and goes to the
sinks: the shipper (``shipper.py``) and, with ``STAGEFLOW_LOG_FORMAT=json``, the process's own
JSON log (``jsonlog.py``).

Not captured: threads a stage starts itself without copying its context (wrap their target in
``contextvars.copy_context().run``), writes to ``sys.stdout.buffer`` or file descriptor 1, and
child processes' output (the ``shell`` executor logs its command's lines through ``ctx.logger``).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "MAX_MESSAGE_CHARS",
    "LogCapture",
    "LogLine",
    "Sink",
    "StageKey",
    "current_stage",
    "stage_scope",
]

MAX_MESSAGE_CHARS = 64 * 1024
"""Longer messages are cut into several lines, so that any line fits in one shipped batch."""

_STAGE_LOGGER = "stageflow.stage"


@dataclass(frozen=True, slots=True)
class StageKey:
    """Which stage attempt a line belongs to."""

    run_id: str
    stage: str
    instance: int | None
    attempt: int

    @property
    def name(self) -> str:
        """``stage`` or ``stage[i]``, as the CLI shows it."""
        return self.stage if self.instance is None else f"{self.stage}[{self.instance}]"


@dataclass(frozen=True, slots=True)
class LogLine:
    """One captured line, with the fields of the control plane's ``POST /api/v1/logs``."""

    seq: int
    run_id: str
    stage: str
    instance: int | None
    attempt: int
    at: str
    """ISO 8601 in UTC."""
    level: str
    stream: str
    """``log`` (a logging record), ``stdout`` or ``stderr``."""
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        """Compact JSON, as it travels in a batch and sits in the spool."""
        text = json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")


Sink = Callable[[LogLine], None]
"""Receives every captured line, in ``seq`` order, on the thread that produced it: must be quick
and must not block (the shipper only queues)."""

_current: contextvars.ContextVar[StageKey | None] = contextvars.ContextVar(
    "stageflow_current_stage", default=None
)
_active: LogCapture | None = None
_guard = threading.local()


def current_stage() -> StageKey | None:
    """The stage the calling code runs under, if any."""
    return _current.get()


@contextlib.contextmanager
def stage_scope(key: StageKey) -> Iterator[None]:
    """Attribute what the enclosed code (and tasks and threads it starts) prints and logs."""
    token = _current.set(key)
    try:
        yield
    finally:
        _current.reset(token)
        capture = _active
        if capture is not None:
            capture.end_stage(key)


class LogCapture:
    """The process's capture: numbering, partial lines, sinks, and the installed hooks."""

    def __init__(self, *, stream_id: str | None = None, echo: bool = True) -> None:
        self.stream_id = stream_id or str(uuid.uuid4())
        """Names this process's sequence of lines (``seq`` restarts with every process)."""
        self.echo = echo
        """Also write what stages print to the real stdout/stderr (off for JSON logs)."""
        self._sinks: list[Sink] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._partial: dict[tuple[StageKey, str], str] = {}
        self._partial_lock = threading.Lock()
        self.real_stdout: TextIO = sys.stdout
        self.real_stderr: TextIO = sys.stderr
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self._stage_logger_level: int | None = None
        self.errors = 0
        """Sink calls that raised (the line still reached the other sinks)."""

    @property
    def last_seq(self) -> int:
        return self._seq

    def add_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    # ------------------------------------------------------------------ hooks
    def install(self) -> None:
        """Put the stdout/stderr proxies and the logging handlers in place (one capture at a time).

        Raises ``RuntimeError`` when another capture is installed: two would number lines twice.
        """
        global _active
        if _active is not None:
            raise RuntimeError("a LogCapture is already installed in this process")
        _active = self
        self.real_stdout, self.real_stderr = sys.stdout, sys.stderr
        sys.stdout = _StreamProxy(self.real_stdout, "stdout", self)  # type: ignore[assignment]
        sys.stderr = _StreamProxy(self.real_stderr, "stderr", self)  # type: ignore[assignment]
        stage_logger = logging.getLogger(_STAGE_LOGGER)
        self._stage_logger_level = stage_logger.level
        if stage_logger.level == logging.NOTSET or stage_logger.level > logging.INFO:
            stage_logger.setLevel(logging.INFO)  # ctx.logger.info is captured whatever root says
        root = logging.getLogger()
        for logger in (stage_logger, root):
            handler = _CaptureHandler(self)
            # First in line: a JSON handler beside it skips what was captured (jsonlog.py).
            with _logging_lock():
                logger.handlers.insert(0, handler)
            self._handlers.append((logger, handler))

    def uninstall(self) -> None:
        """Undo ``install``: flush partial lines, restore the streams, remove the handlers."""
        global _active
        if _active is not self:
            return
        with self._partial_lock:
            pending = list(self._partial)
        for key, stream in pending:
            self._flush_partial(key, stream)
        for name, real in (("stdout", self.real_stdout), ("stderr", self.real_stderr)):
            proxy = getattr(sys, name)
            if isinstance(proxy, _StreamProxy) and proxy.capture is self:
                setattr(sys, name, real)
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        self._handlers.clear()
        if self._stage_logger_level is not None:
            logging.getLogger(_STAGE_LOGGER).setLevel(self._stage_logger_level)
        _active = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[LogCapture]:
        self.install()
        try:
            yield self
        finally:
            self.uninstall()

    # ------------------------------------------------------------------ lines
    def emit(
        self,
        key: StageKey,
        *,
        level: str,
        stream: str,
        message: str,
        created: float | None = None,
    ) -> None:
        """Number ``message`` and hand it to every sink (cut into pieces when very long)."""
        if getattr(_guard, "busy", False):
            # A sink printed or logged while handling a line: don't loop, just show it.
            self.real_stderr.write(message + "\n")
            return
        at = datetime.fromtimestamp(created if created is not None else time.time(), UTC)
        stamp = at.isoformat(timespec="microseconds")
        message = _printable(message)
        pieces = [
            message[i : i + MAX_MESSAGE_CHARS]
            for i in range(0, max(len(message), 1), MAX_MESSAGE_CHARS)
        ]
        _guard.busy = True
        try:
            with self._lock:
                for piece in pieces:
                    self._seq += 1
                    line = LogLine(
                        seq=self._seq,
                        run_id=key.run_id,
                        stage=key.stage,
                        instance=key.instance,
                        attempt=key.attempt,
                        at=stamp,
                        level=level,
                        stream=stream,
                        message=piece,
                    )
                    for sink in self._sinks:
                        try:
                            sink(line)
                        except Exception:
                            self.errors += 1
        finally:
            _guard.busy = False

    def write(self, key: StageKey, stream: str, text: str) -> None:
        """Take what a stage wrote to ``stream``; complete lines are emitted, the rest waits.

        A line's text after its last carriage return is what a terminal would show, so a
        progress bar that redraws with ``\\r`` yields its final state, not every frame.
        """
        with self._partial_lock:
            text = self._partial.pop((key, stream), "") + text
            *complete, rest = text.split("\n")
            if "\r" in rest[:-1]:
                rest = rest[rest.rindex("\r", 0, len(rest) - 1) + 1 :]
            while len(rest) > MAX_MESSAGE_CHARS:
                complete.append(rest[:MAX_MESSAGE_CHARS])
                rest = rest[MAX_MESSAGE_CHARS:]
            if rest:
                self._partial[(key, stream)] = rest
        for line in complete:
            self._emit_output(key, stream, line)

    def end_stage(self, key: StageKey) -> None:
        """Emit what the stage left without a final newline."""
        for stream in ("stdout", "stderr"):
            self._flush_partial(key, stream)

    def _flush_partial(self, key: StageKey, stream: str) -> None:
        with self._partial_lock:
            rest = self._partial.pop((key, stream), "")
        if rest:
            self._emit_output(key, stream, rest)

    def _emit_output(self, key: StageKey, stream: str, line: str) -> None:
        if line.endswith("\r"):
            line = line[:-1]
        if "\r" in line:
            line = line[line.rindex("\r") + 1 :]
        level = "INFO" if stream == "stdout" else "WARNING"
        self.emit(key, level=level, stream=stream, message=line)


class _StreamProxy:
    """Stands in for ``sys.stdout``/``sys.stderr``: a stage's writes are captured, others pass."""

    def __init__(self, real: TextIO, stream: str, capture: LogCapture) -> None:
        self.real = real
        self.stream = stream
        self.capture = capture

    def write(self, text: str) -> int:
        key = _current.get()
        if key is None or getattr(_guard, "busy", False):
            return self.real.write(text)
        if self.capture.echo:
            self.real.write(text)
        self.capture.write(key, self.stream, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _CaptureHandler(logging.Handler):
    """Takes the log records emitted inside a stage (or carrying its key, from ``ctx.logger``)."""

    def __init__(self, capture: LogCapture) -> None:
        super().__init__(logging.NOTSET)
        self.capture = capture
        self._formatter = logging.Formatter("%(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "stageflow_captured", False):
            return  # already taken on its way up from the stageflow.stage logger
        key = getattr(record, "stage_key", None)
        if not isinstance(key, StageKey):
            key = _current.get()
        if key is None:
            return  # the process's own log, not a stage's
        try:
            message = self._formatter.format(record)
        except Exception:
            message = str(record.msg)
        record.stageflow_captured = True
        self.capture.emit(
            key, level=record.levelname, stream="log", message=message, created=record.created
        )


def _printable(message: str) -> str:
    """``message`` as valid UTF-8 (a lone surrogate from a decoded byte stream is not)."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return message.encode("utf-8", "replace").decode("utf-8")
    return message


@contextlib.contextmanager
def _logging_lock() -> Iterator[None]:
    """The logging module's own lock, held while we edit a handler list in place."""
    lock = getattr(logging, "_lock", None)
    if lock is None:
        yield
        return
    with lock:
        yield
