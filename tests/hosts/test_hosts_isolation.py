"""The harness itself: hosts see only their own data dir and reach each other by address only."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stageflow.testing.hosts import Cluster, HostSpec, Unavailable, clean_leftovers
from stageflow.testing.services import SERVER_PORT, Services

pytestmark = pytest.mark.hosts

CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()\n"
    "except OSError as exc:\n"
    "    sys.exit(f'unreachable: {exc}')\n"
)


def reaches(cluster: Cluster, src: str, address: str, port: int) -> bool:
    probe = [sys.executable, "-c", CONNECT, address, str(port)]
    return cluster[src].run(probe, check=False, timeout=10).returncode == 0


def test_a_hosts_files_exist_only_on_that_host(cluster: Cluster) -> None:
    worker1 = cluster["worker1"]
    proof = worker1.data_dir / "proof.txt"
    worker1.run(["sh", "-c", f"echo written-on-worker1 > {proof}"])
    assert proof.read_text() == "written-on-worker1\n"  # a real file, on the real disk
    assert worker1.run(["cat", str(proof)]).stdout == "written-on-worker1\n"
    for other in ("worker2", "dataserver", "source"):
        seen = cluster[other].run(["ls", str(proof), str(worker1.data_dir)], check=False)
        assert seen.returncode != 0, f"{other} sees worker1's files: {seen.stdout}"
        assert "No such file or directory" in seen.stderr
        # ... while its own data dir is there and writable.
        mine = cluster[other].data_dir / "mine.txt"
        cluster[other].run(["sh", "-c", f"echo {other} > {mine} && cat {mine}"])


def test_hosts_reach_each_other_by_address_only(cluster: Cluster, services: Services) -> None:
    dataserver, worker1 = cluster["dataserver"], cluster["worker1"]
    assert reaches(cluster, "worker1", dataserver.address, SERVER_PORT)
    assert reaches(cluster, "worker2", worker1.address, 8701)
    # The server is not on worker1's loopback: each host has a network stack of its own.
    assert not reaches(cluster, "worker1", "127.0.0.1", SERVER_PORT)
    assert reaches(cluster, "dataserver", "127.0.0.1", 7233)  # Temporal binds all of its own
    assert httpx.get(f"{services.server_url}/healthz", timeout=5).status_code == 200


def test_a_cut_link_isolates_a_host_until_restored(cluster: Cluster, services: Services) -> None:
    worker1 = cluster["worker1"]
    worker1.link_down()
    try:
        assert not reaches(cluster, "worker1", cluster["dataserver"].address, SERVER_PORT)
        assert not reaches(cluster, "worker2", worker1.address, 8701)
    finally:
        worker1.link_up()
    assert reaches(cluster, "worker1", cluster["dataserver"].address, SERVER_PORT)


def test_netem_works_or_says_the_kernel_lacks_it(cluster: Cluster) -> None:
    host = cluster["source"]
    try:
        host.netem(delay_ms=5, loss_pct=0)
    except Unavailable as exc:
        assert "sch_netem" in str(exc)
        tried = subprocess.run(
            ["ip", "netns", "exec", host.netns, "tc", "qdisc", "add", "dev", "lo", "root",
             "netem", "delay", "1ms"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert tried.returncode != 0  # really unavailable here, not a bug of ours
        return
    try:
        shown = host.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
        assert "netem" in shown and "delay 5ms" in shown
    finally:
        host.netem()
    assert "netem" not in host.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout


def test_a_small_disk_fills_up(tmp_path: Path) -> None:
    with Cluster([HostSpec("tiny", disk_mb=2)], root=tmp_path) as small:
        tiny = small["tiny"]
        full = tiny.run(
            ["dd", "if=/dev/zero", f"of={tiny.data_dir / 'big'}", "bs=1M", "count=4"], check=False
        )
        assert full.returncode != 0 and "No space left on device" in full.stderr


def test_leftovers_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from stageflow.testing.hosts import Cluster\n"
        "c = Cluster(['a', 'b'], root=Path(sys.argv[1]))\n"
        "print(c.id, flush=True)\n"
        "c['a'].popen(['sleep', '300'])\n"
        "time.sleep(300)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    cluster_id = process.stdout.readline().strip()
    assert (
        cluster_id in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    process.send_signal(signal.SIGKILL)  # a crash: nothing of its own cleanup runs
    process.wait()
    process.stdout.close()
    assert cluster_id in clean_leftovers()
    assert (
        cluster_id
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert cluster_id not in links


def test_no_host_names_collide() -> None:
    with pytest.raises(ValueError, match="unique"):
        Cluster(["a", "a"], root=Path("/nonexistent"))
