"""One HTTP download or upload in a process of its own, so a test can SIGKILL it halfway.

Prints ``DONE TOTAL`` after every chunk that landed (flushed at once), then ``finished``.
The token comes from the environment (``STAGEFLOW_TOKEN``), not the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from stageflow.transfer.http_client import download, upload
from stageflow.transfer.store import ContentStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["download", "upload"])
    parser.add_argument("--sha", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--chunk-size", type=int, required=True)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--bandwidth", type=float, default=None)
    args = parser.parse_args()
    store = ContentStore(args.root, chunk_size=args.chunk_size)
    token = os.environ["STAGEFLOW_TOKEN"]

    def progress(done: int, total: int) -> None:
        print(f"{done} {total}", flush=True)

    options = {"token": token, "streams": args.streams, "bandwidth": args.bandwidth}
    if args.mode == "download":
        asyncio.run(download(args.sha, [args.url], store, progress=progress, **options))
    else:
        asyncio.run(upload(args.sha, store, args.url, progress=progress, **options))
    print("finished", flush=True)


if __name__ == "__main__":
    main()
