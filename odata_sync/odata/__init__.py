"""The OData 4.0 protocol, generic over any EDM whose entity sets are SQLAlchemy Core tables.

It knows nothing about jobs: the service plugs in per-set hooks and action handlers.
"""
