"""The control DB: migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import database_url_for
from sqlalchemy import text

from stageflow.errors import ConfigError
from stageflow.server.db import default_database_url, open_database
from stageflow.server.models import Base


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_match_the_models(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    url = database_url_for(request, backend, tmp_path)
    db = open_database(url)
    try:
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert context.get_current_revision() == "0001"
    finally:
        db.close()
    open_database(url).close()  # a second start finds nothing to do


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    url = default_database_url(tmp_path / "server")
    assert url == f"sqlite:///{tmp_path / 'server' / 'control.db'}"
    db = open_database(url)
    try:
        with db.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        db.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [("not a url", "is not a database URL"), ("mysql://u@h/db", "use sqlite or postgresql")],
)
def test_bad_urls_say_what_to_use(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        open_database(url)


def test_unreachable_postgres_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot open the control DB"):
        open_database("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
