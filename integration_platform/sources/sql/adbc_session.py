"""One PostgreSQL connection through ADBC's own low-level API (``adbc_driver_manager``).

Why not ADBC's DB-API (``adbc_driver_manager.dbapi``), which wraps the same calls: importing it
imports ``pyarrow.dataset`` and pandas, 0.21 s of every run process that reads a PostgreSQL table
(measured with ``python -X importtime`` on this machine; the low-level modules import in 7 ms).
The platform needs three of its calls (run a statement, stream a query's rows as Arrow, close),
which the driver manager's ``AdbcConnection`` / ``AdbcStatement`` provide as they are.
"""

from typing import Any

import pyarrow as pa


class AdbcSession:
    """An open ADBC connection to PostgreSQL (``uri``: a libpq URI), in a transaction as the DB-API
    opens it (autocommit off: ``SET TRANSACTION ...`` applies to the reads after it). Close it with
    :meth:`close` (or use it as a context manager), which closes its readers first; a session dropped
    unclosed closes when it is collected (the DB-API's connection did: ADBC's own handles do not, and a
    reader dropped before its first batch kept its server session open, holding a snapshot and a lock on
    the table, until the process ended). A reader from :meth:`query` must be consumed or closed before
    the next statement. Raises ``adbc_driver_manager.Error`` subclasses (``OperationalError``
    for a server that cannot be reached or a failed connection, ``ProgrammingError`` for bad SQL)."""

    _closed = True  # until every handle is open: ``__del__`` of a session whose ``__init__`` failed does nothing

    def __init__(self, uri: str) -> None:
        import adbc_driver_manager
        import adbc_driver_postgresql

        self._readers: list[pa.RecordBatchReader] = []
        self._statements: list[Any] = []
        self._database = adbc_driver_postgresql.connect(uri)
        try:
            self._connection = adbc_driver_manager.AdbcConnection(self._database)
        except BaseException:
            self._database.close()
            raise
        try:
            self._connection.set_autocommit(False)
        except BaseException:
            self._connection.close()  # the database refuses to close while a connection is open
            self._database.close()
            raise
        self._closed = False

    def _statement(self, text: str, options: dict[str, str] | None) -> Any:
        import adbc_driver_manager

        statement = adbc_driver_manager.AdbcStatement(self._connection)
        self._statements.append(statement)
        if options:
            statement.set_options(**options)
        statement.set_sql_query(text)
        return statement

    def execute(self, text: str) -> None:
        """Run one statement whose result is not read (``SET ...``)."""
        statement = self._statement(text, None)
        statement.execute_update()
        statement.close()
        self._statements.remove(statement)

    def query(self, text: str, options: dict[str, str] | None = None) -> pa.RecordBatchReader:
        """The rows of ``text`` as they stream in (``options``: the driver's statement options, such as
        ``adbc.postgresql.batch_size_hint_bytes``); its statement is closed with the session."""
        handle, _ = self._statement(text, options).execute_query()
        reader = pa.RecordBatchReader._import_from_c(handle.address)
        self._readers.append(reader)
        return reader

    def table(self, text: str) -> pa.Table:
        """All the rows of ``text`` (a catalog query: a few rows)."""
        with self.query(text) as reader:
            return reader.read_all()

    def close(self) -> None:
        """Release the readers, the statements, the connection and the database handle, in that order
        (idempotent)."""
        if self._closed:
            return
        self._closed = True
        while self._readers:
            self._readers.pop().close()
        while self._statements:
            self._statements.pop().close()
        self._connection.close()
        self._database.close()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> "AdbcSession":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
