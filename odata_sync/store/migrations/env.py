"""Alembic environment: runs on the connection the store hands over (see ``odata_sync.store.migrate``)."""

from alembic import context

from odata_sync.edm.model import default_model
from odata_sync.store.tables import build_metadata

target_metadata = build_metadata(default_model())
connection = context.config.attributes.get("connection")
if connection is None:  # `alembic revision --autogenerate` from the command line
    raise SystemExit("run migrations through `odata-sync migrate`")
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
