"""Alembic's environment for the control DB: always run on a connection given in code.

``stageflow.server.db.migrate`` builds the Alembic config programmatically and passes an open
connection in ``config.attributes["connection"]``; there is no alembic.ini to find.
"""

from __future__ import annotations

from alembic import context

from stageflow.server.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through stageflow.server.db.migrate (it passes a connection)"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
