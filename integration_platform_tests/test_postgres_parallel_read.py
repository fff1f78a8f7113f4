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
