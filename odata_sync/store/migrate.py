"""Alembic migrations driven programmatically, so the server can migrate on start and `odata-sync migrate` can too."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from odata_sync.store.engine import Store

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def newest_file_revision() -> str:
    """The head as the version files name it (``NNNN_what.py``, revision ``NNNN``): known without importing Alembic,
    which costs a short command like ``odata-sync run`` more than its own work on a small change."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


async def current_revision(store: Store) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with store.engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def up_to_date(store: Store) -> bool:
    """Whether the store is at the newest revision (one query; False also when it has no version table yet)."""
    try:
        async with store.engine.connect() as conn:
            found = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
    except sa.exc.DBAPIError:
        return False
    return found == [newest_file_revision()]


async def upgrade(store: Store, revision: str = "head") -> None:
    """Bring the store to ``revision`` inside one transaction (PostgreSQL) or as far as SQLite allows."""
    from alembic import command

    config = alembic_config()

    def run(connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with store.engine.begin() as conn:
        await conn.run_sync(run)
