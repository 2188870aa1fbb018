"""Where lake data lives: ``<lake>/{zone}/{dataset}/{yyyy}/{mm}/{dd}/part_N.parquet``.

Every path is built here from names that were validated first (a zone is one of three words,
a dataset is a lowercase identifier, a date is a real calendar date), so no client-supplied
string can name a file outside the lake, and every dataset is also a valid SQL identifier
(``gold.campaign_scores`` needs no quoting in ``stageflow lake query``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from stageflow.errors import LakeError

__all__ = [
    "SCHEMA_FILE",
    "ZONES",
    "PartitionKey",
    "TableKey",
    "parse_date",
    "parse_lake_url",
    "validate_dataset",
    "validate_zone",
]

ZONES = ("bronze", "silver", "gold")
"""Raw data as it arrived, cleaned data, and results ready for use."""
SCHEMA_FILE = "_schema.json"
_DATASET = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def validate_zone(zone: object) -> str:
    if zone not in ZONES:
        raise LakeError(f"zone {zone!r:.40}: use one of {', '.join(ZONES)}", status=400)
    return str(zone)


def validate_dataset(dataset: object) -> str:
    if not isinstance(dataset, str) or not _DATASET.match(dataset):
        raise LakeError(
            f"dataset {dataset!r:.70}: use a lowercase name of letters, digits and _ "
            "(starting with a letter, at most 63 characters), e.g. campaign_scores",
            status=400,
        )
    return dataset


def parse_date(value: object) -> dt.date:
    """A partition date from ``YYYY-MM-DD`` (or a ``date``)."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise LakeError(f"date {value!r:.40}: use YYYY-MM-DD, e.g. 2026-11-23", status=400)


@dataclass(frozen=True)
class TableKey:
    """A lake table: one dataset in one zone."""

    zone: str
    dataset: str

    def __post_init__(self) -> None:
        validate_zone(self.zone)
        validate_dataset(self.dataset)

    @classmethod
    def parse(cls, text: str) -> TableKey:
        """``zone/dataset`` (as the CLI and ``lake://`` URLs write it)."""
        zone, sep, dataset = text.strip("/").partition("/")
        if not sep:
            raise LakeError(f"{text!r:.80}: write a table as ZONE/DATASET, e.g. gold/scores")
        return cls(zone, dataset)

    def __str__(self) -> str:
        return f"{self.zone}/{self.dataset}"

    @property
    def sql_name(self) -> str:
        return f"{self.zone}.{self.dataset}"

    def path(self, lake: Path) -> Path:
        return Path(lake) / self.zone / self.dataset


@dataclass(frozen=True)
class PartitionKey:
    """One day of a lake table."""

    table: TableKey
    date: dt.date

    def path(self, lake: Path) -> Path:
        d = self.date
        return self.table.path(lake) / f"{d.year:04d}" / f"{d.month:02d}" / f"{d.day:02d}"


def parse_lake_url(url: str) -> tuple[TableKey, dt.date | None]:
    """``lake://zone/dataset`` (every partition) or ``lake://zone/dataset/YYYY-MM-DD``."""
    if not url.startswith("lake://"):
        raise LakeError(f"{url!r:.80} is not a lake URL: write lake://zone/dataset[/YYYY-MM-DD]")
    parts = url.removeprefix("lake://").strip("/").split("/")
    if len(parts) not in (2, 3):
        raise LakeError(f"{url!r:.80}: write lake://zone/dataset or lake://zone/dataset/YYYY-MM-DD")
    table = TableKey(parts[0], parts[1])
    return table, parse_date(parts[2]) if len(parts) == 3 else None
