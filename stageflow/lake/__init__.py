"""The lake: daily parquet partitions on the data server, with a catalog and read-only SQL.

``lake/{bronze,silver,gold}/{dataset}/{yyyy}/{mm}/{dd}/part_N.parquet`` plus ``_schema.json``
files, installed atomically (docs/lake.md). Workers reach it only over HTTP (``LakeClient``,
``fetch_lake_source``); the data server serves it with ``stageflow.lake.api.lake_router``.
"""

from stageflow.lake.client import LakeClient, fetch_lake_source
from stageflow.lake.layout import ZONES, PartitionKey, TableKey, parse_lake_url
from stageflow.lake.service import Lake, default_lake_dir

__all__ = [
    "ZONES",
    "Lake",
    "LakeClient",
    "PartitionKey",
    "TableKey",
    "default_lake_dir",
    "fetch_lake_source",
    "parse_lake_url",
]
