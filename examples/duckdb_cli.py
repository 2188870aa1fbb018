"""A minimal DuckDB command-line client: runs the SQL it reads on stdin.

Stands in for a data-source host's own SQL client (the user's Hive/Spark SQL "Server 21") where
the real DuckDB CLI is not installed: ``sql`` stages with ``remote.cli`` run it there over SSH.

    python duckdb_cli.py [DATABASE] [--log FILE] < query.sql

DATABASE is opened read-only (default: in memory); ``--log`` appends one line per run, so a test
can count how often a query really ran. A SQL error goes to stderr with exit status 1, as a real
client's would.
"""

from __future__ import annotations

import argparse
import sys
import time

import duckdb


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the SQL on stdin in DuckDB.")
    parser.add_argument("database", nargs="?", default=":memory:")
    parser.add_argument("--log", help="append a line per run to this file")
    args = parser.parse_args()
    statement = sys.stdin.read()
    if args.log:
        with open(args.log, "a") as handle:
            handle.write(f"{time.time()}\n")
    try:
        read_only = args.database != ":memory:"
        with duckdb.connect(args.database, read_only=read_only) as con:
            con.execute(statement)
    except duckdb.Error as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
