"""Alembic environment for the pgx-cds store, driven from code (cds.store.migrate).

Online: the caller passes an open connection in `config.attributes["connection"]`. Offline
(`alembic upgrade --sql`): give the URL as the `sqlalchemy.url` option.
"""
from alembic import context

from cds.store.schema import Base

config = context.config

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes["connection"]
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
