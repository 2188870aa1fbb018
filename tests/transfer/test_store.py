"""The content-addressed store on real files: layout, atomicity, integrity, full disks, dirs."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from dataplane_server import CHUNK, files_under, small_fs_fixture  # noqa: F401

from stageflow.errors import DiskFullError, IntegrityError
from stageflow.transfer.manifest import ChunkManifest, DirEntry, DirManifest
from stageflow.transfer.store import ContentStore, ObjectInfo, PartialBusyError, validate_sha

MakeStore = Callable[..., ContentStore]


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "staging", chunk_size=CHUNK)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_layout_and_put_bytes(store: ContentStore) -> None:
    for sub in ("objects", "partial", "tmp"):
        assert (store.root / sub).is_dir()
    data = os.urandom(3 * CHUNK + 123)
    info = store.put_bytes(data)
    assert info == ObjectInfo(sha(data), len(data))
    path = store.path(info.sha256)
    assert path == store.root / "objects" / info.sha256[:2] / info.sha256
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert store.has(info.sha256)
    assert files_under(store.root / "tmp") == []
    again = store.put_bytes(data)  # idempotent
    assert again == info


def test_chunk_manifest_is_written_in_the_same_pass(store: ContentStore) -> None:
    data = os.urandom(2 * CHUNK + 7)
    info = store.put_bytes(data)
    on_disk = store.path(info.sha256).with_name(f"{info.sha256}.chunks")
    manifest = ChunkManifest.from_json(on_disk.read_bytes(), expect_sha=info.sha256)
    assert manifest.chunk_size == CHUNK
    assert manifest.chunks == (
        sha(data[:CHUNK]),
        sha(data[CHUNK : 2 * CHUNK]),
        sha(data[2 * CHUNK :]),
    )
    assert store.chunk_manifest(info.sha256) == manifest
    assert manifest.chunk_span(2) == (2 * CHUNK, 7)


def test_missing_chunk_manifest_is_rebuilt_and_corruption_detected(store: ContentStore) -> None:
    data = os.urandom(CHUNK + 1)
    info = store.put_bytes(data)
    store.path(info.sha256).with_name(f"{info.sha256}.chunks").unlink()
    assert store.chunk_manifest(info.sha256).size == len(data)
    store.path(info.sha256).with_name(f"{info.sha256}.chunks").unlink()
    path = store.path(info.sha256)
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.write(b"X")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.chunk_manifest(info.sha256)


def test_empty_object(store: ContentStore) -> None:
    info = store.put_bytes(b"")
    assert info.size == 0
    assert store.chunk_manifest(info.sha256).chunks == ()


def test_put_file_copies_and_link_shares_the_inode(store: ContentStore, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    data = os.urandom(CHUNK * 2)
    src.write_bytes(data)
    copied = store.put_file(src)
    assert copied.sha256 == sha(data)
    assert store.path(copied.sha256).stat().st_ino != src.stat().st_ino

    other = tmp_path / "other.bin"
    other.write_bytes(data + b"!")
    linked = store.put_file(other, link=True)
    assert store.path(linked.sha256).stat().st_ino == other.stat().st_ino
    assert store.chunk_manifest(linked.sha256).sha256 == sha(data + b"!")


def test_put_file_link_falls_back_to_copy_across_filesystems(
    tmp_path: Path,
    small_fs: Path,
) -> None:
    store = ContentStore(tmp_path / "staging", chunk_size=CHUNK)
    src = small_fs / "elsewhere.bin"
    src.write_bytes(b"on another filesystem")
    info = store.put_file(src, link=True)
    assert store.path(info.sha256).read_bytes() == b"on another filesystem"
    assert store.path(info.sha256).stat().st_dev != src.stat().st_dev


def test_put_file_refuses_non_regular_files(store: ContentStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file"):
        store.put_file(tmp_path)


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, "../" + "0" * 61, "0" * 63 + "\n", None],
)
def test_validate_sha_refuses_anything_but_64_lowercase_hex(bad: object) -> None:
    with pytest.raises(ValueError, match="sha256 content address"):
        validate_sha(bad)


def test_validate_sha_accepts_a_real_digest() -> None:
    digest = sha(b"x")
    assert validate_sha(digest) == digest


def test_paths_refuse_bad_names_before_touching_disk(store: ContentStore) -> None:
    for bad in ("../../etc/passwd", "/etc/passwd", "0" * 62 + "/."):
        with pytest.raises(ValueError):
            store.path(bad)
        with pytest.raises(ValueError):
            store.open_partial(bad, 10)
    assert files_under(store.root) == []


def test_commit_partial_verifies_the_whole_hash(store: ContentStore) -> None:
    data = os.urandom(CHUNK * 2)
    digest = sha(data)
    with store.open_partial(digest, len(data)) as partial:
        partial.write_at(0, data[:CHUNK])
        partial.write_at(CHUNK, b"\0" * CHUNK)  # wrong bytes
        with pytest.raises(IntegrityError, match="discarded"):
            store.commit_partial(digest)
    assert not store.has(digest)
    assert files_under(store.root / "objects") == []
    assert files_under(store.root / "partial") == []

    with store.open_partial(digest, len(data)) as partial:
        assert not partial.existed
        partial.write_at(0, data)
        assert store.commit_partial(digest) == ObjectInfo(digest, len(data))
    assert store.path(digest).read_bytes() == data
    assert files_under(store.root / "partial") == []


def test_open_partial_resumes_and_locks(store: ContentStore) -> None:
    data = os.urandom(CHUNK * 2)
    digest = sha(data)
    with store.open_partial(digest, len(data)) as partial:
        partial.write_at(0, data[:CHUNK])
        with pytest.raises(PartialBusyError):
            store.open_partial(digest, len(data))
    with store.open_partial(digest, len(data)) as partial:
        assert partial.existed
        assert partial.read_at(0, CHUNK) == data[:CHUNK]
    with store.open_partial(digest, 10) as resized, pytest.raises(ValueError, match="exceeds"):
        assert not resized.existed, "a partial of another size is started over"
        resized.write_at(5, b"0123456789")
    store.discard_partial(digest)


def test_remove_and_status(store: ContentStore) -> None:
    one = store.put_bytes(b"one")
    store.put_bytes(b"two!")
    (store.root / "inputs" / "run1" / "stage-a").mkdir(parents=True)
    (store.root / "work" / "run1" / "stage-a").mkdir(parents=True)
    (store.root / "work" / "run1" / "stage-b").mkdir(parents=True)
    store.open_partial(sha(b"three"), 5).close()
    status = store.status()
    assert (status.objects, status.object_bytes, status.partials) == (2, 7, 1)
    assert (status.inputs, status.outputs) == (1, 2)
    assert status.disk_total >= status.disk_free > 0
    assert json.loads(json.dumps(status.to_dict()))["objects"] == 2
    assert store.remove(one.sha256)
    assert not store.remove(one.sha256)
    assert not store.has(one.sha256)
    assert store.status().objects == 1


def test_put_file_on_a_full_disk_leaves_nothing(small_fs: Path, tmp_path: Path) -> None:
    store = ContentStore(small_fs / "staging", chunk_size=CHUNK)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(8 * 1024 * 1024))
    with pytest.raises(DiskFullError, match="no space left") as caught:
        store.put_file(src)
    assert str(small_fs) in str(caught.value)
    assert files_under(store.root) == []


def test_open_partial_larger_than_the_disk_leaves_nothing(small_fs: Path) -> None:
    store = ContentStore(small_fs / "staging", chunk_size=CHUNK)
    with pytest.raises(DiskFullError, match="16777216 bytes needed"):
        store.open_partial(sha(b"big"), 16 * 1024 * 1024)
    assert files_under(store.root) == []


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "nested/deeper/b.bin": os.urandom(CHUNK * 3 + 5),
        "nested/empty": b"",
        "same-as-a.txt": b"alpha\n",
        "run.sh": b"#!/bin/sh\necho hi\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "run.sh").chmod(0o755)
    return files


def test_put_dir_and_materialize(store: ContentStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    info = store.put_dir(src)
    assert info.size == sum(len(d) for d in files.values())
    manifest = store.dir_manifest(info.sha256)
    raw = store.path(info.sha256).read_bytes()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode(), (
        "the manifest is stored in canonical form"
    )
    assert [e.path for e in manifest.entries] == sorted(files)
    by_path = {e.path: e for e in manifest.entries}
    assert by_path["run.sh"].mode == 0o755
    assert by_path["a.txt"].sha256 == by_path["same-as-a.txt"].sha256

    dest = tmp_path / "inputs" / "run" / "stage" / "data"
    assert store.materialize(info.sha256, "dir", dest) == dest
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert (dest / "a.txt").stat().st_ino == store.path(by_path["a.txt"].sha256).stat().st_ino
    assert os.access(dest / "run.sh", os.X_OK)
    assert [p.name for p in dest.parent.iterdir()] == ["data"], "no staging dir left behind"

    with pytest.raises(FileExistsError):
        store.materialize(info.sha256, "dir", dest)
    single = tmp_path / "single.bin"
    store.materialize(by_path["nested/deeper/b.bin"].sha256, "file", single)
    assert single.read_bytes() == files["nested/deeper/b.bin"]
    with pytest.raises(FileExistsError):
        store.materialize(by_path["a.txt"].sha256, "file", single)


def test_materialize_refuses_a_dir_with_missing_objects(
    store: ContentStore, tmp_path: Path
) -> None:
    entry = DirEntry(path="x", sha256=sha(b"absent"), size=6, mode=0o644)
    manifest_sha = store.put_bytes(DirManifest((entry,)).to_json()).sha256
    with pytest.raises(FileNotFoundError, match="fetch the directory"):
        store.materialize(manifest_sha, "dir", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_put_dir_refuses_symlinks(store: ContentStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        store.put_dir(src)


@pytest.mark.parametrize(
    "path",
    ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", "a/", "", "a\x00b", "a/./b"],
)
def test_dir_manifests_with_escaping_paths_are_refused(store: ContentStore, path: str) -> None:
    doc = {"entries": [{"path": path, "sha256": sha(b"x"), "size": 1, "mode": 0o644}]}
    manifest_sha = store.put_bytes(json.dumps(doc).encode()).sha256
    with pytest.raises(ValueError):
        store.dir_manifest(manifest_sha)


def test_dir_manifest_rules() -> None:
    digest = sha(b"x")
    with pytest.raises(ValueError, match="sorted"):
        DirManifest((DirEntry("b", digest, 1, 0o644), DirEntry("a", digest, 1, 0o644)))
    with pytest.raises(ValueError, match="as a file and as the directory"):
        DirManifest((DirEntry("a", digest, 1, 0o644), DirEntry("a/b", digest, 1, 0o644)))
    with pytest.raises(ValueError, match="mode"):
        DirManifest.from_json(
            json.dumps({"entries": [{"path": "a", "sha256": digest, "size": 1, "mode": 0o4755}]})
        )
    with pytest.raises(ValueError, match="chunks"):
        ChunkManifest.from_json(
            json.dumps({"sha256": digest, "size": 10, "chunk_size": 4, "chunks": [digest]})
        )


def test_close_waits_for_a_thread_still_writing(store: ContentStore) -> None:
    """A cancelled transfer's worker thread may still be in pwrite when the task closes the
    partial; the descriptor must stay open (and locked) until that thread is done with it."""
    digest = sha(b"0123456789")
    partial = store.open_partial(digest, 10)
    with partial._descriptor() as fd:  # what write_at holds while a thread writes
        partial.close()
        assert partial.closed
        os.fstat(fd)  # still open: the writer can finish into the right file
        with pytest.raises(PartialBusyError):
            store.open_partial(digest, 10)
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError, match="closed"):
        partial.write_at(0, b"late")
    store.open_partial(digest, 10).close()  # the lock went with the descriptor
