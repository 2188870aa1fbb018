"""A log shipper in a process of its own, for the SIGKILL test.

``python shipper_process.py URL SPOOL_DIR COUNT``: captures COUNT lines of a stage, ships them to
URL (which is down), prints ``{"stream_id", "spooled"}`` once every line is in the spool on disk,
then waits to be killed. The token comes from STAGEFLOW_TOKEN.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from stageflow.worker.control import ControlClient
from stageflow.worker.logcapture import LogCapture, StageKey
from stageflow.worker.shipper import LogShipper


async def main(url: str, spool_dir: Path, count: int) -> None:
    capture = LogCapture(echo=False)
    client = ControlClient(url, token=os.environ["STAGEFLOW_TOKEN"])
    shipper = LogShipper(
        client=client,
        worker="killed-worker",
        stream_id=capture.stream_id,
        spool_dir=spool_dir,
        flush_interval=0.05,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    await shipper.start()
    capture.add_sink(shipper.submit)
    key = StageKey("run-killed", "stage", None, 1)
    for i in range(count):
        capture.emit(key, level="INFO", stream="stdout", message=f"line {i}")
        if i % 250 == 0:
            await asyncio.sleep(0.01)  # let the sender try, fail and go offline meanwhile
    while shipper.stats.spooled < count:
        await asyncio.sleep(0.02)
    print(json.dumps({"stream_id": capture.stream_id, "spooled": shipper.stats.spooled}))
    sys.stdout.flush()
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
