"""Install a partition and SIGKILL ourselves at one step: a real crash at a known point.

Usage: python crash_install.py LAKE STORE SHA DATE STEP
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from stageflow.lake.layout import PartitionKey, TableKey, parse_date
from stageflow.lake.writer import install_partition
from stageflow.transfer.store import ContentStore


def main() -> None:
    lake, store, sha, date, crash_at = sys.argv[1:6]

    def step(name: str) -> None:
        if name == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    key = PartitionKey(TableKey("silver", "scores"), parse_date(date))
    install_partition(Path(lake), ContentStore(Path(store)), key=key, sha256=sha, on_step=step)


if __name__ == "__main__":
    main()
