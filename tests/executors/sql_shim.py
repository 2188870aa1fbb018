"""Stands in for a data-source host's SQL client: ``python sql_shim.py DATABASE LOG``.

DuckDB's Python package has no CLI binary, so the remote-export tests run this over SSH as
``remote.cli``: it reads SQL on stdin, appends one line to LOG (so a test counts how often the
query really ran), and executes it for real in DuckDB against the database file. A SQL error
goes to stderr with exit status 1, as a real client's would.
"""

from __future__ import annotations

import sys
import time

import duckdb


def main() -> int:
    database, log = sys.argv[1], sys.argv[2]
    statement = sys.stdin.read()
    with open(log, "a") as handle:
        handle.write(f"{time.time()}\n")
    try:
        with duckdb.connect(database, read_only=True) as con:
            con.execute("SET threads = 2")
            con.execute(statement)
    except duckdb.Error as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
