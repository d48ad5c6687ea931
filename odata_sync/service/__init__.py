"""The CData Sync service on top of the generic OData layer: per-set hooks, roles, actions, auth, secrets.

``cdata.CDataService`` puts them together for the app; this package itself imports nothing, so a command that needs
one piece (``odata-sync run`` decrypting a connection string) does not load the rest."""
