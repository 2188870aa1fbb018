"""Fixtures of the multi-host suite: four hosts (network + mount namespaces) and their services.

``cluster`` is a :class:`stageflow.testing.hosts.Cluster` of ``dataserver``, ``source``,
``worker1`` and ``worker2``; ``services`` starts on it Temporal and ``stageflow server``
(dataserver), sshd (source) and a worker on each worker host (worker1: ``default`` and the
pipeline workflows; worker2: ``ml`` with tag ``cpu``), all with ``--path examples``. Both live for
the session. Everything is skipped, with the reason, where namespaces or sshd are unavailable
(not root, no ``ip netns``, no mount namespaces). Test modules carry ``pytestmark =
pytest.mark.hosts`` (a registered marker that the default ``pytest`` run includes).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_run import REPO

from stageflow.testing.hosts import Cluster, unavailable
from stageflow.testing.services import Services, start_services
from stageflow.testing.sshd import sshd_unavailable

HOSTS = ("dataserver", "source", "worker1", "worker2")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = unavailable() or sshd_unavailable()
    if reason is not None:
        pytest.skip(f"multi-host harness unavailable: {reason}")
    with Cluster(HOSTS, root=tmp_path_factory.mktemp("hosts")) as made:
        yield made


@pytest.fixture(scope="session")
def services(cluster: Cluster) -> Iterator[Services]:
    started = start_services(cluster, paths=[REPO / "examples"])
    try:
        yield started
    finally:
        for service in [started.temporal, started.server, *started.workers.values()]:
            print(f"--- {service.name} on {service.host.name}\n{service.tail(15)}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The chaos suite's table (faults, runs completed, rows lost/duplicated, recovery p50/p95);
    ``CHAOS_REPORT=FILE`` also writes it as JSON."""
    import sys

    harness = sys.modules.get("chaos_harness")
    lines = harness.report_lines() if harness is not None else []
    if lines:
        terminalreporter.section("chaos: faults and recovery")
        for line in lines:
            terminalreporter.write_line(line)
