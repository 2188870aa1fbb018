"""``stageflow gc``: remove staging data no stage refers to any more, once it is old enough.

What a stage wrote (``work/<run>/``) and received (``inputs/<run>/``) is dropped when nothing
in the run's directory changed for ``ttl`` seconds. An object is referenced while a hard link
to it exists (a work or input file is one), so after that an object whose only link is the
store's own and that is older than ``ttl`` goes too, as do stale partial transfers.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from stageflow.transfer.store import ContentStore

__all__ = ["GcReport", "collect_garbage"]


@dataclass
class GcReport:
    removed_runs: list[str] = field(default_factory=list)
    removed_objects: int = 0
    removed_partials: int = 0
    freed_bytes: int = 0


def _last_touched(path: Path) -> float:
    stat = path.stat(follow_symlinks=False)
    newest = max(stat.st_mtime, stat.st_ctime)
    if path.is_dir():
        for child in path.rglob("*"):
            child_stat = child.stat(follow_symlinks=False)
            newest = max(newest, child_stat.st_mtime, child_stat.st_ctime)
    return newest


def collect_garbage(
    store: ContentStore, *, ttl: float, dry_run: bool = False, now: float | None = None
) -> GcReport:
    """Remove what is unreferenced and older than ``ttl`` seconds; report what went."""
    cutoff = (time.time() if now is None else now) - ttl
    report = GcReport()
    for area in ("work", "inputs"):
        base = store.root / area
        for run_dir in sorted(base.iterdir()) if base.is_dir() else []:
            if _last_touched(run_dir) < cutoff:
                report.removed_runs.append(f"{area}/{run_dir.name}")
                if not dry_run:
                    shutil.rmtree(run_dir, ignore_errors=True)
    for partial in sorted(store.partial_dir.iterdir()) if store.partial_dir.is_dir() else []:
        if partial.is_file() and _last_touched(partial) < cutoff:
            report.removed_partials += 1
            report.freed_bytes += partial.stat().st_blocks * 512
            if not dry_run:
                partial.unlink(missing_ok=True)
    for shard in sorted(store.objects_dir.iterdir()) if store.objects_dir.is_dir() else []:
        for entry in sorted(shard.iterdir()):
            if "." in entry.name:
                continue  # a chunk manifest goes with its object
            stat = entry.stat()
            if stat.st_nlink > 1 or max(stat.st_mtime, stat.st_ctime) >= cutoff:
                continue
            report.removed_objects += 1
            report.freed_bytes += stat.st_size
            if not dry_run:
                store.remove(entry.name)
    return report
