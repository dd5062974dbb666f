"""The barman tier: its fixtures (``object_store``, ``barman_clean``, ``barman_damaged``) live in
store_fixtures.py, a plugin tests/conftest.py loads so the kubernetes tier can use them too."""
