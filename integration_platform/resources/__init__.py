"""One ConfigurableResource per external system: connection and I/O only."""

from integration_platform.resources.lake import LakeResource
from integration_platform.resources.sql_database import SqlDatabaseResource

__all__ = ["LakeResource", "SqlDatabaseResource"]
