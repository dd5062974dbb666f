"""Barman Cloud object stores: the tools (reachable by the PostgreSQL OS user), a read-only view of
the store, the ``barman_cloud`` catalog kind and the scenario that builds such a store."""
