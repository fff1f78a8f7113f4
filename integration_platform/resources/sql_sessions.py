"""SQLAlchemy engines' session settings the platform needs wherever it reads a database: the SQL
sources' pooled engines (:func:`integration_platform.sources.sql.sa_arrow.engine_for`) and an HTTP
sync's own engine (:mod:`integration_platform.outbound.http_sync`)."""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

#: SQLAlchemy's dialect names of the MySQL protocol's servers, which share its quirks (session time
#: zone, ``SHOW CREATE TABLE`` reflection, the binlog).
MYSQL_DIALECTS = ("mysql", "mariadb")


def is_mysql(dialect_name: str) -> bool:
    """Whether a SQLAlchemy dialect (or a URL's backend) name, such as ``engine.dialect.name``, is
    MySQL's or MariaDB's."""
    return dialect_name in MYSQL_DIALECTS


def utc_sessions(engine: Engine) -> Engine:
    """``engine``, whose new connections read ``TIMESTAMP`` in UTC when it is MySQL/MariaDB
    (:func:`_utc_session`): every engine the platform reads such a database with, the SQL sources' pooled
    ones and an HTTP sync's own. Returns ``engine`` itself."""
    if is_mysql(engine.dialect.name):
        sa.event.listen(engine, "connect", _utc_session)
    return engine


def _utc_session(dbapi_connection: Any, _: Any) -> None:
    """Set a new MySQL/MariaDB connection's session time zone to UTC. A ``TIMESTAMP`` is an instant the
    server converts to the session's zone: read in a zone with daylight saving time (the server's
    ``Europe/Berlin``) it landed as wall-clock time, the hour the clocks go back twice, so a mark of
    02:50 CEST was read back as 02:50 CET and a row written between them (02:20 CET) never landed. In
    UTC it lands as the change-data-capture snapshot lands it. Stored ``DATETIME`` and ``DATE`` values do not
    depend on it; expressions do (``NOW()``, ``CURDATE()``, ``FROM_UNIXTIME``, ``DATE(a_timestamp)`` in a
    view or query now give UTC's time and day)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
