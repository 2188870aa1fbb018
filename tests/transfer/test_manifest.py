"""Chunk manifests computed in one pass, and the checks on manifests that come from peers."""

from __future__ import annotations

import hashlib
import json
import os
import random

import pytest

from stageflow.transfer.manifest import ChunkHasher, ChunkManifest, DirEntry, DirManifest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096, 10_000])
def test_one_pass_hasher_matches_hashing_each_chunk(size: int) -> None:
    data = os.urandom(size)
    hasher = ChunkHasher(4096)
    rng = random.Random(size)
    position = 0
    while position < size:  # fed in pieces that straddle chunk boundaries
        step = rng.randint(1, 5000)
        hasher.update(data[position : position + step])
        position += step
    manifest = hasher.finish()
    assert manifest.sha256 == sha(data) and manifest.size == size
    assert manifest.chunks == tuple(sha(data[i : i + 4096]) for i in range(0, size, 4096))
    assert ChunkManifest.from_json(manifest.to_json(), expect_sha=sha(data)) == manifest


def test_chunk_manifest_from_a_peer_is_checked() -> None:
    good = ChunkHasher(4096)
    good.update(b"x" * 5000)
    doc = json.loads(good.finish().to_json())
    with pytest.raises(ValueError, match="describes"):
        ChunkManifest.from_json(json.dumps(doc), expect_sha=sha(b"other"))
    for key, value in [("size", -1), ("size", True), ("chunk_size", 0), ("chunk_size", 1 << 40)]:
        with pytest.raises(ValueError):
            ChunkManifest.from_json(json.dumps({**doc, key: value}))
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ChunkManifest.from_json(json.dumps({**doc, "chunks": ["../x", doc["chunks"][1]]}))
    with pytest.raises(ValueError, match="not valid JSON"):
        ChunkManifest.from_json(b"\xff{")


def test_dir_manifest_json_is_canonical() -> None:
    digest = sha(b"x")
    manifest = DirManifest(
        (DirEntry("a/b.parquet", digest, 1, 0o644), DirEntry("c", digest, 1, 0o600))
    )
    expected = json.dumps(
        {"entries": [e.to_doc() for e in manifest.entries]}, sort_keys=True, separators=(",", ":")
    ).encode()
    assert manifest.to_json() == expected
    assert DirManifest.from_json(expected) == manifest
    assert manifest.size == 2
