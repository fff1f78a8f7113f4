"""Names of the replication slots and publications a PostgreSQL change-data-capture stream creates.

Kept apart from :mod:`~integration_platform.sources.sql.postgres_cdc` so that building the definitions
(which validates a YAML ``slot_prefix`` and names each stream's slots) does not import psycopg: the
client is imported when a step reads the change log.
"""

import hashlib
import re

#: Replication slot and publication names: PostgreSQL identifiers we create (63 bytes at most).
SLOT_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def cursor_prefix(source: str, stream: str) -> str:
    """The stream's slot (and publication) name without the generation: ``ip_<source>_<stream>`` cut
    to fit, then a hash of the full path, so two streams never share a prefix. Two databases of one
    cluster may hold a stream of the same path: the slot's name adds a hash of the database after the
    prefix (:meth:`~integration_platform.sources.sql.postgres_cdc.PostgresChangeLog.new_cursor`)."""
    digest = hashlib.sha256(f"{source}/{stream}".encode()).hexdigest()[:6]
    return f"ip_{source}_{stream}"[:44] + f"_{digest}"
