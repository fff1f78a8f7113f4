"""The ctid-range reader (``read_postgres_parallel``) against the shared PostgreSQL, on pagila: the
ranges together give each row of the table exactly once, typed as the single stream types them, and
in the snapshot taken when the reader opened, whatever is written while it is drained."""

import threading
import time

import psycopg
import pyarrow as pa
import pytest

from integration_platform.core.row_filter import RowFilter
from integration_platform.sources.sql.postgres_arrow import read_postgres, read_postgres_parallel
from integration_platform_tests.conftest import PG_HOST, PG_PORT


@pytest.fixture
def uri(pagila_db: str) -> str:
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{pagila_db}"


def rows(reader: pa.RecordBatchReader, key: str) -> list[dict[str, object]]:
    return sorted(reader.read_all().to_pylist(), key=lambda row: row[key])


@pytest.mark.parametrize("readers", [1, 2, 3, 7])
def test_the_ranges_together_give_every_row_once_typed_as_one_stream(uri: str, readers: int) -> None:
    single = read_postgres(uri, "rental", "public", None)
    parallel = read_postgres_parallel(uri, "rental", "public", None, readers, min_bytes=0)
    assert parallel.schema == single.schema
    assert rows(parallel, "rental_id") == rows(single, "rental_id")


def test_a_row_filter_applies_to_every_range(uri: str) -> None:
    bounds = RowFilter("rental_id", 1000, 9000)
    got = rows(read_postgres_parallel(uri, "rental", "public", bounds, 3, min_bytes=0), "rental_id")
    assert got == rows(read_postgres(uri, "rental", "public", bounds), "rental_id")
    assert 7000 < len(got) < 8000 and got[0]["rental_id"] == 1000


def test_writes_while_the_ranges_are_read_are_not_seen(uri: str) -> None:
    """Rows updated (moved to new pages), inserted and deleted after the reader opened: the reader
    still gives the table as it was when it opened, no row twice and none missing."""
    before = rows(read_postgres(uri, "payment_p2022_01", "public", None), "payment_id")
    reader = read_postgres_parallel(uri, "payment_p2022_01", "public", None, 3, batch_bytes=4096, min_bytes=0)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("UPDATE payment_p2022_01 SET amount = amount + 1")  # every row gets a new version
        conn.execute("DELETE FROM payment_p2022_01 WHERE payment_id % 2 = 0")
        conn.execute(
            "INSERT INTO payment_p2022_01 (customer_id, staff_id, rental_id, amount, payment_date) "
            "SELECT customer_id, staff_id, rental_id, amount, payment_date FROM payment_p2022_01"
        )
    assert rows(reader, "payment_id") == before


def test_a_reader_dropped_after_one_batch_stops_its_streams_and_closes_their_connections(
    uri: str, pagila_db: str
) -> None:
    reader = read_postgres_parallel(uri, "rental", "public", None, 3, batch_bytes=4096, min_bytes=0)
    assert reader.read_next_batch().num_rows > 0
    reader.close()
    del reader
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    with psycopg.connect(uri, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while (left := conn.execute(sessions, [pagila_db]).fetchone()[0]) and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.05)
    assert left == 0
    assert not [t for t in threading.enumerate() if t.name == "pg-range"]


def test_a_read_that_fails_before_its_rows_closes_its_connection(uri: str, pagila_db: str) -> None:
    with pytest.raises(Exception, match="no_such_table"):
        read_postgres(uri, "no_such_table", "public", None)
    with psycopg.connect(uri, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [pagila_db]
        ).fetchone()[0]  # type: ignore[index]
    assert left == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://postgres@127.0.0.1:5432/pagila",
            {"user": "postgres", "host": "127.0.0.1", "port": "5432", "dbname": "pagila"},
        ),
        (  # SQLAlchemy's own rendering of this one wrote the space raw, which libpq refuses
            "postgresql://us%40er:p%40ss%3Aw%2Frd%25%3F%23%26%3D%2B%20%C3%BC@db.example:6543/my%2Fdb?sslmode=disable",
            {
                "user": "us@er",
                "password": "p@ss:w/rd%?#&=+ \u00fc",
                "host": "db.example",
                "port": "6543",
                "dbname": "my/db",
                "sslmode": "disable",
            },
        ),
        (
            "postgresql+psycopg2://user:secret@/pagila?host=/var/run/postgresql&application_name=ip",
            {
                "user": "user",
                "password": "secret",
                "dbname": "pagila",
                "host": "/var/run/postgresql",
                "application_name": "ip",
            },
        ),
        (  # raw characters SQLAlchemy's grammar allows in a password, which a libpq URI must encode
            "postgresql+psycopg://user:pa/ss%zz 50%off@db.example:5432/app",
            {"user": "user", "password": "pa/ss%zz 50%off", "host": "db.example", "port": "5432", "dbname": "app"},
        ),
        (  # a zone id's % and a query SQLAlchemy decodes (+ a space)
            "postgresql+psycopg://user@[fe80::1%eth0]:5432/db?options=-c+search_path%3Dx&application_name=a%zz",
            {
                "user": "user",
                "host": "fe80::1%eth0",
                "port": "5432",
                "dbname": "db",
                "options": "-c search_path=x",
                "application_name": "a%zz",
            },
        ),
        (
            "postgresql+asyncpg://user@[::1]:5432/pagila",
            {"user": "user", "host": "::1", "port": "5432", "dbname": "pagila"},
        ),
    ],
)
def test_the_libpq_uri_names_the_connection_the_url_names(url: str, expected: dict[str, str]) -> None:
    """Written without SQLAlchemy (its import cost each PostgreSQL read 0.11-0.17 s), the libpq URI gives
    libpq's own parser the user, password, host, port, database and options of the URL, a password of
    reserved characters, a space and a non-ASCII letter included; the backend is SQLAlchemy's."""
    import sqlalchemy as sa
    from psycopg.conninfo import conninfo_to_dict

    from integration_platform.sources.sql.database import SqlDatabaseResource

    ours = SqlDatabaseResource(url=url)
    assert conninfo_to_dict(ours.libpq_uri()) == expected
    assert ours.dialect == sa.make_url(url).get_backend_name() == "postgresql"


@pytest.mark.parametrize("url", ["", "127.0.0.1:5432/db", "postgresql:/db", "post gres://h/db"])
def test_a_url_without_a_scheme_is_refused_without_echoing_it(url: str) -> None:
    from integration_platform.sources.sql.database import SqlDatabaseResource

    with pytest.raises(ValueError, match="dialect\\+driver://") as caught:
        SqlDatabaseResource(url=url).libpq_uri()
    assert url == "" or url not in str(caught.value)


def test_reading_a_postgresql_table_imports_neither_pandas_nor_sqlalchemy(uri: str) -> None:
    """A run that lands a PostgreSQL table imports neither (0.2 s and 0.11-0.17 s of each such run,
    benchmarks/sql_extract.py): ADBC's DB-API imported pandas, the libpq URI was rendered by SQLAlchemy."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from integration_platform.sources.sql.database import SqlDatabaseResource\n"
        f"db = SqlDatabaseResource(url={uri.replace('postgresql://', 'postgresql+psycopg://')!r})\n"
        "with db.read('rental', 'public') as reader:\n"
        "    rows = reader.read_all().num_rows\n"
        "print(rows, 'pandas' in sys.modules, 'sqlalchemy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["16044", "False", "False"]


def test_a_reader_dropped_before_its_first_batch_closes_its_session(uri: str, pagila_db: str) -> None:
    """ADBC's own handles have no finalizer: a reader dropped unread (a key column renamed at the source
    fails the extract before its first batch) kept its server session open, holding its snapshot."""
    import gc

    reader = read_postgres(uri, "rental", "public", None)
    assert reader.schema.names[0] == "rental_id"
    del reader
    gc.collect()
    with psycopg.connect(uri, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [pagila_db]
        ).fetchone()[0]  # type: ignore[index]
    assert left == 0


def test_ranges_opened_before_one_that_fails_close_their_sessions(uri: str, pagila_db: str) -> None:
    """A role allowed two sessions: the coordinator and the first range open, the second range is refused;
    the first range's session, which holds the exported snapshot, is closed with the failure."""
    role = "ip_two_sessions"
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2")
        conn.execute(f"GRANT SELECT ON rental TO {role}")
    try:
        limited = uri.replace("postgres@", f"{role}@", 1)
        with pytest.raises(Exception, match="too many connections"):
            read_postgres_parallel(limited, "rental", "public", None, 3, min_bytes=0)
        with psycopg.connect(uri, autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while (
                left := conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [role]).fetchone()[0]  # type: ignore[index]
            ) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert left == 0
    finally:
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON rental FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_parallel_reader_dropped_before_its_first_batch_closes_its_sessions(uri: str, pagila_db: str) -> None:
    """The ranges' drain threads start with the first batch asked for: started when the reader was made,
    a reader dropped unread kept both ranges' sessions and threads until the process ended."""
    import gc

    reader = read_postgres_parallel(uri, "rental", "public", None, 2, min_bytes=0)
    assert reader.schema.names[0] == "rental_id"
    del reader
    gc.collect()
    with psycopg.connect(uri, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while (
            left := conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [pagila_db]
            ).fetchone()[0]  # type: ignore[index]
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert left == 0
    assert not [t for t in threading.enumerate() if t.name == "pg-range"]
