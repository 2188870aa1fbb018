"""Prometheus metrics of one server app (its own registry, so several apps never collide).

Two kinds of numbers:

* **gauges read from the DB at scrape time** (runs and stages by status, workers by state),
  so they are right after a restart and agree between replicas sharing a DB;
* **counters and histograms observed as events arrive** (stage durations, retries, transfer
  bytes and rates, log lines). These follow Prometheus's usual counter semantics: they start
  at zero when the process starts and ``rate()`` handles the reset. Re-posted lifecycle events
  are de-duplicated before they are counted.

Queue backlog comes from Temporal's ``DescribeTaskQueue`` with ``report_stats`` (one call per
task queue that a live worker serves, at scrape time; the count is Temporal's approximation).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Telemetry"]

_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
_RATE_BUCKETS = tuple(float(10**e) for e in range(3, 11))  # 1 kB/s .. 10 GB/s


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Gauge("stageflow_runs", "Indexed runs by status.", ["status"], registry=r)
        self.stages = Gauge(
            "stageflow_stages",
            "Stage instances by the status of their latest lifecycle event.",
            ["status"],
            registry=r,
        )
        self.workers = Gauge(
            "stageflow_workers",
            "Registered workers by state (lost: no heartbeat for 3 intervals).",
            ["state"],
            registry=r,
        )
        self.queue_backlog = Gauge(
            "stageflow_queue_backlog",
            "Tasks waiting in a Temporal task queue (Temporal's approximate backlog count).",
            ["queue", "type"],
            registry=r,
        )
        self.stage_duration = Histogram(
            "stageflow_stage_duration_seconds",
            "Duration of finished stage attempts, from worker events.",
            ["status"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.stage_events = Counter(
            "stageflow_stage_events", "Stage events received, by status.", ["status"], registry=r
        )
        self.retries = Counter(
            "stageflow_stage_retries", "Stage attempts after the first that started.", registry=r
        )
        self.transfer_bytes = Counter(
            "stageflow_transfer_bytes", "Bytes moved by finished transfers.", registry=r
        )
        self.transfer_rate = Histogram(
            "stageflow_transfer_rate_bytes_per_second",
            "Average rate of each finished transfer.",
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.log_lines = Counter(
            "stageflow_log_lines", "Log lines stored (re-sent duplicates excluded).", registry=r
        )

    @staticmethod
    def _set_all(gauge: Gauge, values: Mapping[str, float], always: tuple[str, ...]) -> None:
        gauge.clear()
        for label in always:
            gauge.labels(label).set(0)
        for label, value in values.items():
            gauge.labels(label).set(value)

    def set_snapshot(
        self,
        *,
        runs: Mapping[str, int],
        stages: Mapping[str, int],
        workers: Mapping[str, int],
        backlog: Mapping[tuple[str, str], int] | None,
    ) -> None:
        self._set_all(self.runs, runs, ("running", "succeeded", "failed"))
        self._set_all(self.stages, stages, ())
        self._set_all(self.workers, workers, ("alive", "draining", "stopped", "lost"))
        self.queue_backlog.clear()
        for (queue, kind), count in (backlog or {}).items():
            self.queue_backlog.labels(queue, kind).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
