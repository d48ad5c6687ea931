"""The metadata store: SQLAlchemy Core tables derived from the EDM, the engine, and migrations."""

from odata_sync.store.engine import Store, create_store
from odata_sync.store.tables import build_metadata

__all__ = ["Store", "build_metadata", "create_store"]
