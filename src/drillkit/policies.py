"""Names of the backup selection policies, shared by spec validation and selection.

Kept apart from pitr so that validating a spec (at DAG-parse time) does not import the catalog.
"""

POLICIES = ("latest", "previous", "oldest", "pinned")
