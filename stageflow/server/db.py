"""The control DB connection: engine, sessions, and migrations applied at start.

SQLite (the default, one file under the server's data dir) runs in WAL mode so that log
followers read while workers write, with a busy timeout instead of "database is locked"
errors. PostgreSQL is reached with psycopg 3 (``postgresql://`` URLs are mapped to it).
Route handlers are async and SQLAlchemy here is sync, so DB work runs in worker threads
through ``Database.run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from stageflow.errors import ConfigError

__all__ = ["DATABASE_URL_ENV", "Database", "default_database_url", "migrate", "open_database"]

DATABASE_URL_ENV = "STAGEFLOW_SERVER_DATABASE_URL"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x5F1A57A6E  # pg_advisory_xact_lock key: one migrating server at a time

T = TypeVar("T")


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'control.db'}"


def _normalize(url: str) -> URL:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(
            f"{DATABASE_URL_ENV}={url!r:.80} is not a database URL ({exc}); use "
            "sqlite:////path/control.db or postgresql://user:password@host:5432/db"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported control DB {parsed.get_backend_name()!r}: use sqlite or postgresql"
        )
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    parsed = _normalize(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there already)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    """An engine and its session factory; ``run`` does blocking DB work off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.sessions.begin() as session:
            yield session

    async def run(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in a thread, inside one transaction."""

        def call() -> T:
            with self.session() as session:
                return work(session)

        return await anyio.to_thread.run_sync(call)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    """Connect to ``url`` and apply pending migrations."""
    engine = create_db_engine(url)
    try:
        migrate(engine)
    except Exception as exc:
        engine.dispose()
        safe = engine.url.render_as_string(hide_password=True)
        raise ConfigError(f"cannot open the control DB {safe}: {exc}") from exc
    return Database(engine)
