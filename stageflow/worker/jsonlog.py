"""The process's own log as JSON lines on stderr (``STAGEFLOW_LOG_FORMAT=json``).

Why: log collectors (journald, Loki, CloudWatch, ...) index fields, not prose. Every object has
``at``, ``level``, ``logger`` and ``message``; anything logged or printed under a stage also has
``run_id``, ``stage``, ``instance``, ``attempt``, ``stream``, ``seq`` and ``stream_id``, the same
numbering the control plane stores, so a line found in one place can be found in the other.

Captured stage lines are written by ``json_sink`` (a ``LogCapture`` sink); the root handler
that ``configure_process_logging`` installs writes every other record and skips the ones the
capture took, so nothing appears twice.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

from stageflow.worker.logcapture import LogLine, Sink, StageKey, current_stage

__all__ = ["JsonFormatter", "configure_process_logging", "json_sink"]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the stage's identity when it was logged under one."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        key = getattr(record, "stage_key", None)
        if not isinstance(key, StageKey):
            key = current_stage()
        if key is not None:
            document.update(
                run_id=key.run_id, stage=key.stage, instance=key.instance, attempt=key.attempt
            )
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


class _NotCaptured(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "stageflow_captured", False)


def configure_process_logging(log_format: str, *, level: int = logging.WARNING) -> None:
    """Set up the root logger: human text (as before), or JSON lines on stderr."""
    if log_format != "json":
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_NotCaptured())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def json_sink(stream: TextIO, stream_id: str) -> Sink:
    """A capture sink writing each line to ``stream`` (the real stderr) as one JSON object."""
    lock = threading.Lock()

    def sink(line: LogLine) -> None:
        document = {
            "at": line.at,
            "level": line.level,
            "logger": "stageflow.stage",
            "message": line.message,
            "run_id": line.run_id,
            "stage": line.stage,
            "instance": line.instance,
            "attempt": line.attempt,
            "stream": line.stream,
            "seq": line.seq,
            "stream_id": stream_id,
        }
        text = json.dumps(document, ensure_ascii=False) + "\n"
        with lock:
            stream.write(text)
            stream.flush()

    return sink
