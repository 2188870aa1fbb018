"""`stageflow gc`: unreferenced staging data older than the TTL goes; the rest stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

from stageflow.transfer.gc import collect_garbage
from stageflow.transfer.store import ContentStore


def _stage_output(store: ContentStore, run: str, name: str, data: bytes) -> str:
    work = store.root / "work" / run / "stage"
    work.mkdir(parents=True, exist_ok=True)
    path = work / name
    path.write_bytes(data)
    return store.put_file(path, link=True).sha256


def test_gc_keeps_fresh_and_referenced_data_and_removes_the_rest(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "staging", chunk_size=64 * 1024)
    old_output = _stage_output(store, "run-old", "a.bin", os.urandom(1000))
    new_output = _stage_output(store, "run-new", "b.bin", os.urandom(1000))
    loose = store.put_bytes(os.urandom(5000)).sha256
    stale_partial = store.partial_dir / ("0" * 64)
    stale_partial.write_bytes(b"x" * 10)
    ttl = 3600.0
    later = time.time() + 2 * ttl

    # Nothing is old yet: nothing goes.
    report = collect_garbage(store, ttl=ttl)
    assert report.removed_runs == [] and report.removed_objects == 0
    assert store.has(old_output) and store.has(loose)

    # Keep run-new fresh as of "later" by touching it then; everything else has aged.
    fresh = store.root / "work" / "run-new" / "stage" / "b.bin"
    os.utime(fresh, (later, later))
    dry = collect_garbage(store, ttl=ttl, now=later, dry_run=True)
    assert dry.removed_runs == ["work/run-old"]
    assert store.has(old_output) and (store.root / "work" / "run-old").exists()

    report = collect_garbage(store, ttl=ttl, now=later)
    assert report.removed_runs == ["work/run-old"]
    assert report.removed_partials == 1 and not stale_partial.exists()
    # The loose object and the old output (no longer linked from a work dir) are gone; the
    # fresh run's object is still referenced by its work file.
    assert not store.has(loose) and not store.has(old_output)
    assert store.has(new_output)
    assert report.removed_objects == 2 and report.freed_bytes >= 6000
    assert fresh.read_bytes() == store.path(new_output).read_bytes()
