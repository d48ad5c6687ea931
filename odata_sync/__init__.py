"""odata-sync: a self-hosted data-replication server managed through an OData 4.0 API (CData Sync compatible)."""

__version__ = "0.1.0"
