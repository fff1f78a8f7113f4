"""Reverse ETL (HttpSync) against a real HTTP target that stores what it receives; no mocks.

The target is ``sandbox/push_target/server.py`` (SQLite, honours Idempotency-Key), faults come from
``sandbox/fault_proxy.py`` in front of it; assertions count what the target stored.
"""

import asyncio
import base64
import gzip
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.dataset as ds
import pytest

from integration_platform.outbound.http_push import HttpPusher, PushPolicy, PushRequest, PushResult
from integration_platform.resources.http_auth import HttpAuth
from integration_platform_tests.rest_servers import fault_proxy, reason_echoing_server, scripted_server
from integration_platform_tests.services import PG_HOST, PG_PORT, require_port
from sandbox.harness import failure_messages, latest_metadata, platform
from sandbox.push_target import PushTarget, datasette_target, push_target

REPO = Path(__file__).resolve().parent.parent
KEY = dg.AssetKey(["reverse_etl", "contacts_out"])


def sync_yaml(url: str, **extra: object) -> str:
    attributes: dict[str, object] = {
        "sync": "contacts_out",
        "source": {"warehouse": True},
        "query": "SELECT id, email, updated_at FROM crm.contacts",
        "key_columns": ["id"],
        "cursor": "updated_at",
        "target": {"base_url": url, "path": "/api/contacts", "method": "POST"},
        "mapping": {"contact_id": "id", "mail": "email", "origin": "literal:warehouse"},
        "concurrency": 8,
        "backoff_factor": 0.05,
        "chunk_rows": 100,
        **extra,
    }
    return json.dumps({"type": "integration_platform.components.HttpSync", "attributes": attributes})


def seed(warehouse: Path, rows: int) -> None:
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS crm")
        conn.execute(
            "CREATE OR REPLACE TABLE crm.contacts AS SELECT i AS id, 'user' || i || '@example.com' AS email, "
            "TIMESTAMP '2026-01-01' + to_seconds(i // 10) AS updated_at FROM range(1, ? + 1) t(i)",
            [rows],
        )


def arrived(target: PushTarget) -> Counter[int]:
    """How many times each contact id was stored by the target."""
    counts: Counter[int] = Counter()
    for stored in target.items():
        item = stored["item"]
        for record in item if isinstance(item, list) else [item]:
            counts[int(record["contact_id"])] += 1
    return counts


def test_every_row_arrives_once_and_only_changed_rows_are_sent_again(tmp_path: Path) -> None:
    seed(tmp_path / "warehouse.duckdb", 500)
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        plat = platform(sync_yaml(target.url), tmp_path, instance)
        assert plat.materialize([KEY]).success
        assert arrived(target) == Counter(range(1, 501))
        meta = latest_metadata(instance, KEY)
        assert (meta["rows_read"], meta["rows_succeeded"], meta["rows_failed"]) == (500, 500, 0)
        assert meta["cursor_after"] == {"kind": "timestamp", "text": "2026-01-01T00:00:50"}
        results = ds.dataset(str(tmp_path / "lake" / "reverse_etl" / "contacts_out_results"), format="parquet")
        assert results.count_rows() == 500
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
            conn.execute(
                "UPDATE crm.contacts SET email = 'new' || id, updated_at = TIMESTAMP '2026-02-01' WHERE id <= 5"
            )
        before = target.stats()
        assert plat.materialize([KEY]).success
        # The row at the old mark (id 500) is read again but was acknowledged: it is not sent again.
        stats = target.stats()
        assert stats["stored_requests"] - before["stored_requests"] == 5
        assert stats["replays"] - before["replays"] == 0
        assert latest_metadata(instance, KEY)["rows_skipped"] == 1
        counts = arrived(target)
        assert all(counts[i] == 2 for i in range(1, 6)) and all(counts[i] == 1 for i in range(6, 501))


def test_faults_recover_with_each_row_stored_once(tmp_path: Path) -> None:
    seed(tmp_path / "warehouse.duckdb", 300)
    plan = [
        {"fault": "429", "every": 7, "retry_after": 1, "times": 3},
        {"fault": "500", "every": 11, "times": 5},
        {"fault": "reset", "every": 13, "times": 5},
        {"fault": "truncate", "every": 17, "times": 5},  # the target stored it; the client saw a broken answer
    ]
    with (
        push_target(tmp_path / "target.sqlite") as target,
        fault_proxy(target.url, plan) as proxy,
        dg.instance_for_test() as instance,
    ):
        plat = platform(sync_yaml(proxy.url), tmp_path, instance)
        assert plat.materialize([KEY]).success
        faults = proxy.stats()["faults"]
        assert sum(faults.values()) >= 10, faults
        assert arrived(target) == Counter(range(1, 301))
        assert target.stats()["replays"] >= 1  # truncated answers were retried and replayed, not stored again


def test_batch_mode_and_secrets_stay_out_of_the_event_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(tmp_path / "warehouse.duckdb", 250)
    secret = "s3cr3t-token-value"
    monkeypatch.setenv("PUSH_TOKEN", secret)
    with push_target(tmp_path / "target.sqlite", token=secret) as target, dg.instance_for_test() as instance:
        yaml_text = sync_yaml(
            target.url,
            mode="batch",
            batch_size=40,
            target={
                "base_url": target.url,
                "path": "/api/contacts",
                "auth": {"type": "bearer", "token_env": "PUSH_TOKEN"},
            },
        )
        plat = platform(yaml_text, tmp_path, instance)
        result = plat.materialize([KEY])
        assert result.success
        assert arrived(target) == Counter(range(1, 251))
        assert target.stats()["stored_requests"] == 8  # chunks of 100 rows: 40 + 40 + 20, twice, then 40 + 10
        logs = json.dumps([str(e) for e in instance.all_logs(result.run_id)])
        assert secret not in logs


def test_dead_letter_records_failures_and_advances(tmp_path: Path) -> None:
    seed(tmp_path / "warehouse.duckdb", 100)
    with (
        push_target(tmp_path / "target.sqlite", reject_regex=r'"contact_id": (13|42)\b') as target,
        dg.instance_for_test() as instance,
    ):
        plat = platform(sync_yaml(target.url, on_failure="dead_letter"), tmp_path, instance)
        assert plat.materialize([KEY]).success
        assert set(arrived(target)) == set(range(1, 101)) - {13, 42}
        dead = ds.dataset(str(tmp_path / "lake" / "reverse_etl" / "contacts_out_dead_letter"), format="parquet")
        table = dead.to_table().to_pylist()
        assert sorted(json.loads(r["key"])[0] for r in table) == [13, 42]
        assert {r["status"] for r in table} == {422}
        meta = latest_metadata(instance, KEY)
        assert meta["rows_failed"] == 2 and meta["cursor_after"] == {"kind": "timestamp", "text": "2026-01-01T00:00:10"}


def test_fail_policy_names_the_record_and_keeps_the_mark_before_it(tmp_path: Path) -> None:
    seed(tmp_path / "warehouse.duckdb", 100)
    with (
        push_target(tmp_path / "target.sqlite", reject_regex=r'"contact_id": 42\b') as target,
        dg.instance_for_test() as instance,
    ):
        plat = platform(sync_yaml(target.url, on_failure="fail", concurrency=1), tmp_path, instance)
        result = plat.materialize([KEY], raise_on_error=False)
        assert not result.success
        message = " ".join(failure_messages(result))
        assert "record [42]" in message and "422" in message
        # id 42 has updated_at 00:00:04: the mark stays there, so the next run re-sends 40..49 and on.
        assert latest_metadata(instance, KEY)["cursor_after"] == {"kind": "timestamp", "text": "2026-01-01T00:00:04"}
        assert 42 not in arrived(target)


def test_run_killed_midway_then_rerun_stores_every_row_once(tmp_path: Path) -> None:
    seed(tmp_path / "warehouse.duckdb", 2000)
    home = tmp_path / "home"
    home.mkdir()
    with push_target(tmp_path / "target.sqlite", latency_ms=5) as target:
        yaml_file = tmp_path / "sync.yaml"
        yaml_file.write_text(sync_yaml(target.url, concurrency=4))
        args = [sys.executable, "-m", "integration_platform_tests.run_stream", str(yaml_file), str(tmp_path), str(home)]
        process = subprocess.Popen(
            [*args, KEY.to_user_string()], cwd=REPO, env=dict(os.environ), stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while target.stats()["items"] < 300 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -9
        partial = target.stats()["items"]
        assert 300 <= partial < 2000
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            assert latest_metadata(instance, KEY) == {}  # no mark was recorded by the killed run
            assert platform(yaml_file.read_text(), tmp_path, instance).materialize([KEY]).success
            assert latest_metadata(instance, KEY)["rows_succeeded"] == 2000
        assert arrived(target) == Counter(range(1, 2001))
        assert target.stats()["replays"] >= partial - 8  # rows of the killed run were replayed, not stored again


def test_datasette_write_api_stores_every_row_once_through_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """datasette 1.0a41's ``POST /<db>/<table>/-/insert`` with ``{"rows": [...], "ignore": true}`` into a table keyed
    on the idempotency key: a retried batch whose first answer was lost stores nothing twice."""
    seed(tmp_path / "warehouse.duckdb", 400)
    table = "CREATE TABLE contacts (idempotency_key TEXT PRIMARY KEY, contact_id INTEGER, mail TEXT);"
    plan = [{"fault": "truncate", "every": 3, "times": 2}, {"fault": "503", "every": 4, "retry_after": 1, "times": 1}]
    with (
        datasette_target(tmp_path / "target.db", table) as target,
        fault_proxy(target.url, plan) as proxy,
        dg.instance_for_test() as instance,
    ):
        monkeypatch.setenv("DATASETTE_TOKEN", target.token)
        yaml_text = sync_yaml(
            proxy.url,
            mode="batch",
            batch_size=50,
            mapping={"idempotency_key": "@idempotency_key", "contact_id": "id", "mail": "email"},
            target={
                "base_url": proxy.url,
                "path": "/target/contacts/-/insert",
                "auth": {"type": "bearer", "token_env": "DATASETTE_TOKEN"},
                "wrap": "rows",
                "wrap_extra": {"ignore": True},
            },
        )
        plat = platform(yaml_text, tmp_path, instance)
        assert plat.materialize([KEY]).success
        assert sum(proxy.stats()["faults"].values()) == 3
        with sqlite3.connect(target.db) as conn:
            ids = [r[0] for r in conn.execute("SELECT contact_id FROM contacts")]
        assert Counter(ids) == Counter(range(1, 401))
        assert latest_metadata(instance, KEY)["rows_succeeded"] == 400


def test_sqlalchemy_source_sends_only_changed_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source database named by a SQLAlchemy URL (SQLite here), integer cursor."""
    source = tmp_path / "crm.sqlite"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, version INTEGER)")
        conn.executemany("INSERT INTO contacts VALUES (?, ?, ?)", [(i, f"u{i}", i) for i in range(1, 201)])
    monkeypatch.setenv("CRM_DB_URL", f"sqlite:///{source}")
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        yaml_text = sync_yaml(
            target.url,
            source={"url_env": "CRM_DB_URL"},
            query="SELECT id, email, version FROM contacts",
            cursor="version",
            mapping={"contact_id": "id", "mail": "email"},
        )
        plat = platform(yaml_text, tmp_path, instance)
        assert plat.materialize([KEY]).success
        assert latest_metadata(instance, KEY)["cursor_after"] == {"kind": "int", "text": "200"}
        with sqlite3.connect(source) as conn:
            conn.execute("UPDATE contacts SET email = 'changed', version = 300 + id WHERE id IN (3, 7)")
        assert plat.materialize([KEY]).success
        meta = latest_metadata(instance, KEY)
        assert (meta["rows_read"], meta["cursor_after"]["text"]) == (3, "307")  # 200 (the old mark) again, 3 and 7
        counts = arrived(target)
        assert counts == Counter({**dict.fromkeys(range(1, 201), 1), 3: 2, 7: 2})


def contact_body(row: dict[str, object]) -> dict[str, object]:
    """The ``hook`` of the test below: a body no column mapping can express."""
    return {"contact": {"id": row["id"], "domain": str(row["email"]).split("@")[1]}, "tags": ["crm", "sync"]}


def test_hook_put_with_path_placeholders_under_a_rate_limit(tmp_path: Path) -> None:
    seed(tmp_path / "warehouse.duckdb", 60)
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        document = json.loads(
            sync_yaml(
                target.url,
                target={"base_url": target.url, "path": "/api/contacts/{id}", "method": "PUT"},
                hook="integration_platform_tests.test_reverse_etl:contact_body",
                rate_limit=40,
            )
        )
        del document["attributes"]["mapping"]  # a hook instead of a mapping
        yaml = json.dumps(document)
        started = time.monotonic()
        assert platform(yaml, tmp_path, instance).materialize([KEY]).success
        seconds = time.monotonic() - started
        stored = target.items()
        assert sorted(s["path"] for s in stored) == sorted(f"/api/contacts/{i}" for i in range(1, 61))
        first = next(s["item"] for s in stored if s["path"] == "/api/contacts/7")
        assert first == {"contact": {"id": 7, "domain": "example.com"}, "tags": ["crm", "sync"]}
        assert seconds >= 60 / 40 * 0.9, f"60 requests at 40/s took {seconds:.2f}s"


def test_batch_mode_never_sends_an_acknowledged_row_again_in_another_batch(tmp_path: Path) -> None:
    """Each run reads the rows at the mark again (``>=``); a batch's key is that of its rows, so rows 20..25
    acknowledged as one batch, then read again with 26..30, went out as a new batch the target stored."""
    seed(tmp_path / "warehouse.duckdb", 25)
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        plat = platform(sync_yaml(target.url, mode="batch", batch_size=10), tmp_path, instance)
        assert plat.materialize([KEY]).success
        seed(tmp_path / "warehouse.duckdb", 30)  # 26..30 share the mark's value (00:00:02) with 20..25
        assert plat.materialize([KEY]).success
        assert arrived(target) == Counter(range(1, 31))
        meta = latest_metadata(instance, KEY)
        assert (meta["rows_read"], meta["rows_skipped"], meta["rows_succeeded"]) == (11, 6, 5)


def test_batch_mode_after_a_failure_resends_no_acknowledged_row(tmp_path: Path) -> None:
    """A failure stops the mark at its row's value (00:00:01, row 13's); rows with that value acknowledged in
    earlier batches went again in new batches (of other rows, so under new keys) on the next run."""
    seed(tmp_path / "warehouse.duckdb", 30)
    db = tmp_path / "target.sqlite"
    with dg.instance_for_test() as instance:
        options = {"mode": "batch", "batch_size": 5, "concurrency": 1, "on_failure": "fail", "max_retries": 0}
        with push_target(db, reject_regex=r'"contact_id": 13\b') as target:
            result = platform(sync_yaml(target.url, **options), tmp_path, instance).materialize(
                [KEY], raise_on_error=False
            )
            assert not result.success
            assert len(arrived(target)) == 10 and 13 not in arrived(target)  # ties come in any order
            assert target.stats()["requests"] == 3  # nothing is sent after the failed batch
        with push_target(db) as target:
            assert platform(sync_yaml(target.url, **options), tmp_path, instance).materialize([KEY]).success
            assert arrived(target) == Counter(range(1, 31))


def test_a_row_with_a_null_cursor_fails_and_the_mark_waits_for_it(tmp_path: Path) -> None:
    """A NULL cursor is never read again by ``cursor >= mark``: the mark moved past the failed row, lost for good.
    Now it is refused naming the column, and read (and refused) again on every run until its cursor is set."""
    seed(tmp_path / "warehouse.duckdb", 20)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("UPDATE crm.contacts SET updated_at = NULL WHERE id = 6")
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        result = platform(sync_yaml(target.url), tmp_path, instance).materialize([KEY], raise_on_error=False)
        assert not result.success
        message = " ".join(failure_messages(result))
        assert "record [6]" in message and "'updated_at' is NULL" in message
        assert 6 not in arrived(target)
        # NULLs sort last: every other row was sent; the mark stays at the last row before the NULL one
        assert latest_metadata(instance, KEY)["cursor_after"] == {"kind": "timestamp", "text": "2026-01-01T00:00:02"}
        again = platform(sync_yaml(target.url), tmp_path, instance).materialize([KEY], raise_on_error=False)
        assert not again.success and "record [6]" in " ".join(failure_messages(again))  # read again, never passed over
    with push_target(tmp_path / "target2.sqlite") as target, dg.instance_for_test() as instance:
        dead = platform(sync_yaml(target.url, on_failure="dead_letter"), tmp_path, instance).materialize([KEY])
        assert dead.success and set(arrived(target)) == set(range(1, 21)) - {6}
        letters = ds.dataset(str(tmp_path / "lake" / "reverse_etl" / "contacts_out_dead_letter"), format="parquet")
        (letter,) = letters.to_table().to_pylist()
        assert json.loads(letter["key"]) == [6] and letter["cursor"] is None and "NULL" in letter["error"]


def test_without_a_cursor_a_changed_row_goes_out_under_a_new_key(tmp_path: Path) -> None:
    """The key was SHA-256 of (sync, key values): a changed row carried its old key and the target replayed the
    old answer; the update was dropped while rows_succeeded counted it."""
    seed(tmp_path / "warehouse.duckdb", 5)
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        plat = platform(sync_yaml(target.url, cursor=None), tmp_path, instance)
        assert plat.materialize([KEY]).success
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
            conn.execute("UPDATE crm.contacts SET email = 'changed@example.com' WHERE id = 3")
        assert plat.materialize([KEY]).success
        mails = [s["item"]["mail"] for s in target.items() if s["item"]["contact_id"] == 3]
        assert mails == ["user3@example.com", "changed@example.com"]
        assert target.stats()["replays"] == 4  # the 4 unchanged rows, under their old keys


def test_on_failure_fail_starts_no_request_after_the_failure(tmp_path: Path) -> None:
    """progress.stopped was set only after the whole chunk: 97 more rows went out after a 422."""
    seed(tmp_path / "warehouse.duckdb", 100)
    with (
        push_target(tmp_path / "target.sqlite", reject_regex=r'"contact_id": 3\b') as target,
        dg.instance_for_test() as instance,
    ):
        plat = platform(sync_yaml(target.url, on_failure="fail", concurrency=1), tmp_path, instance)
        assert not plat.materialize([KEY], raise_on_error=False).success
        assert target.stats()["requests"] == 3
        meta = latest_metadata(instance, KEY)
        assert (meta["rows_sent"], meta["rows_failed"]) == (3, 1)


def results(tmp_path: Path, name: str = "results") -> list[dict[str, object]]:
    """The rows of ``reverse_etl/contacts_out_<name>`` in the lake."""
    return (
        ds.dataset(str(tmp_path / "lake" / "reverse_etl" / f"contacts_out_{name}"), format="parquet")
        .to_table()
        .to_pylist()
    )


def test_an_oauth2_token_obtained_at_run_time_is_masked_in_results_and_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pusher masked only the secrets known when it was built; a target echoing the Authorization header
    put the access token obtained at run time in the results and dead-letter Parquet."""
    token = "ya29.ACCESS-TOKEN-issued-at-run-time-0123456789"

    def answer(request: dict[str, object]) -> tuple[int, dict[str, str], object]:
        if str(request["path"]).startswith("/token"):
            return 200, {}, {"access_token": token, "token_type": "bearer", "expires_in": 3600}
        headers = request["headers"]
        assert isinstance(headers, dict)
        return 422, {}, {"error": "invalid", "echo": headers.get("Authorization")}

    seed(tmp_path / "warehouse.duckdb", 2)
    monkeypatch.setenv("PUSH_CLIENT_SECRET", "client-secret-value")
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # a plain-http token endpoint on 127.0.0.1
    with scripted_server(answer) as server, dg.instance_for_test() as instance:
        auth = {
            "type": "oauth2_client_credentials",
            "token_url": f"{server.url}/token",
            "client_id": "cid",
            "client_secret_env": "PUSH_CLIENT_SECRET",
        }
        target = {"base_url": server.url, "path": "/api/contacts", "auth": auth}
        plat = platform(sync_yaml(server.url, on_failure="dead_letter", target=target), tmp_path, instance)
        assert plat.materialize([KEY]).success
        assert any(token in json.dumps(r) for r in server.requests)  # the token was sent and echoed
    for name in ("results", "dead_letter"):
        rows = results(tmp_path, name)
        assert len(rows) == 2 and all("Bearer ***" in str(r["response"]) for r in rows)
        assert token not in json.dumps(rows, default=str)


@contextmanager
def trickling_target(interval: float) -> Iterator[str]:
    """A target answering 200 with headers promising 1 MB, then one body byte every ``interval`` seconds."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
            while not stop.wait(interval):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def test_an_attempt_ends_at_request_timeout_and_a_body_past_max_body_bytes_is_cut(tmp_path: Path) -> None:
    """httpx's read timeout bounds the gap between two reads: a target trickling its body held the sync for
    ever. A body past ``max_body_bytes`` is read no further; the status decides (a target accepting a row
    with a large answer had it counted as failed)."""
    seed(tmp_path / "warehouse.duckdb", 1)
    options = {"on_failure": "dead_letter", "max_retries": 0, "read_timeout": 5, "request_timeout": 1}
    with trickling_target(0.1) as url, dg.instance_for_test() as instance:
        started = time.monotonic()
        assert platform(sync_yaml(url, **options), tmp_path, instance).materialize([KEY]).success
        assert time.monotonic() - started < 15
    (row,) = results(tmp_path)
    assert row["status"] is None and "request_timeout (1s)" in str(row["error"])
    with (
        scripted_server(lambda request: (200, {}, "x" * 5000)) as server,
        dg.instance_for_test() as instance,
    ):
        big = {**options, "request_timeout": 60, "max_body_bytes": 1000, "max_retries": 3}
        assert platform(sync_yaml(server.url, **big), tmp_path, instance).materialize([KEY]).success
        assert len(server.requests) == 1 and latest_metadata(instance, KEY)["rows_succeeded"] == 1
    outcomes = sorted((r["status"] or 0, r["error"] or "") for r in results(tmp_path))
    assert outcomes == [(0, "AttemptTooLong: the attempt passed request_timeout (1s)"), (200, "")], outcomes


def test_a_malformed_retry_after_counts_as_absent(tmp_path: Path) -> None:
    """urllib3 raised InvalidHeader on ``Retry-After: soon``, which crashed the whole sync."""
    seed(tmp_path / "warehouse.duckdb", 1)
    answers = iter([(503, {"Retry-After": "soon"}, "busy"), (200, {}, {"ok": True})])
    with scripted_server(lambda request: next(answers)) as server, dg.instance_for_test() as instance:
        assert platform(sync_yaml(server.url), tmp_path, instance).materialize([KEY]).success
        assert len(server.requests) == 2
    (row,) = results(tmp_path)
    assert (row["status"], row["attempts"]) == (200, 2)


def test_a_body_its_content_encoding_does_not_describe_fails_the_row(tmp_path: Path) -> None:
    """httpx's DecodingError is no TransportError: it escaped the pusher, the run failed bare, nothing recorded."""
    seed(tmp_path / "warehouse.duckdb", 3)

    def answer(request: dict[str, object]) -> tuple[int, dict[str, str], object]:
        if '"contact_id": 2' in str(request["body"]):
            return 200, {"Content-Encoding": "gzip"}, b"this is not gzip"
        return 200, {"Content-Encoding": "gzip"}, gzip.compress(b'{"ok": true}')

    with scripted_server(answer) as server, dg.instance_for_test() as instance:
        result = platform(sync_yaml(server.url, on_failure="dead_letter", max_retries=1), tmp_path, instance)
        assert result.materialize([KEY]).success
        meta = latest_metadata(instance, KEY)
        assert (meta["rows_succeeded"], meta["rows_failed"]) == (2, 1)
    (letter,) = results(tmp_path, "dead_letter")
    assert json.loads(str(letter["key"])) == [2] and "DecodingError" in str(letter["error"])


def test_no_oauth2_token_fails_the_rows_naming_the_token_endpoint_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token endpoint's refusal escaped the pusher and the run failed as a LandingError of the results."""
    seed(tmp_path / "warehouse.duckdb", 2)
    monkeypatch.setenv("PUSH_CLIENT_SECRET", "client-secret-value")
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    with (
        scripted_server(lambda request: (401, {}, {"error": "invalid_client"})) as server,
        dg.instance_for_test() as instance,
    ):
        auth = {
            "type": "oauth2_client_credentials",
            "token_url": f"{server.url}/token",
            "client_id": "cid",
            "client_secret_env": "PUSH_CLIENT_SECRET",
        }
        target = {"base_url": server.url, "path": "/api/contacts", "auth": auth}
        result = platform(sync_yaml(server.url, target=target, concurrency=1), tmp_path, instance).materialize(
            [KEY], raise_on_error=False
        )
        assert not result.success
        message = " ".join(failure_messages(result))
        assert "sync contacts_out: record [1]" in message and "no OAuth2 access token" in message
        assert "LandingError" not in message and "client-secret-value" not in message
        assert all(str(r["path"]).startswith("/token") for r in server.requests)


def test_path_values_null_or_empty_fail_the_row_and_other_columns_do_not_matter(tmp_path: Path) -> None:
    """Every column was checked as a path segment (an unrelated ``..`` stopped the sync), and a NULL or empty
    placeholder value wrote to ``/api/contacts/None/profile`` or ``/api/contacts//profile``."""
    seed(tmp_path / "warehouse.duckdb", 4)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("UPDATE crm.contacts SET email = CASE id WHEN 2 THEN NULL WHEN 3 THEN '' ELSE email END")
    query = "SELECT id, email, updated_at, '..' AS note FROM crm.contacts"
    target_options = {"path": "/api/contacts/{email}/profile", "method": "POST"}
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        yaml = sync_yaml(
            server.url, query=query, on_failure="dead_letter", target={"base_url": server.url, **target_options}
        )
        assert platform(yaml, tmp_path, instance).materialize([KEY]).success
        paths = sorted(str(r["path"]) for r in server.requests)
    assert paths == ["/api/contacts/user1%40example.com/profile", "/api/contacts/user4%40example.com/profile"]
    letters = {json.loads(str(r["key"]))[0]: str(r["error"]) for r in results(tmp_path, "dead_letter")}
    assert letters == {2: "not sent: path column 'email' is NULL", 3: "not sent: path column 'email' is empty"}


def test_nan_and_infinity_are_sent_as_null(tmp_path: Path) -> None:
    """``json.dumps`` wrote ``"score": NaN``, which is no JSON."""
    seed(tmp_path / "warehouse.duckdb", 2)
    score = "CASE id WHEN 1 THEN 'NaN'::DOUBLE ELSE 'inf'::DOUBLE END AS score"
    query = f"SELECT id, email, updated_at, {score} FROM crm.contacts"
    mapping = {"contact_id": "id", "score": "score"}
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        assert (
            platform(sync_yaml(server.url, query=query, mapping=mapping), tmp_path, instance).materialize([KEY]).success
        )
        bodies = [str(r["body"]) for r in server.requests]
    assert sorted(json.loads(b)["contact_id"] for b in bodies) == [1, 2]
    assert all(json.loads(b)["score"] is None and "NaN" not in b and "Infinity" not in b for b in bodies)


def test_a_mapping_or_path_column_the_query_lacks_fails_naming_the_sync_and_column(tmp_path: Path) -> None:
    """A missing column failed with a bare KeyError ('emial') at the first row, naming neither sync nor column list."""
    seed(tmp_path / "warehouse.duckdb", 2)
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        for extra in (
            {"mapping": {"mail": "emial"}},
            {"target": {"base_url": server.url, "path": "/api/contacts/{slug}", "method": "POST"}},
        ):
            result = platform(sync_yaml(server.url, **extra), tmp_path, instance).materialize(
                [KEY], raise_on_error=False
            )
            assert not result.success
            message = " ".join(failure_messages(result))
            assert "sync contacts_out: column(s)" in message and ("'emial'" in message or "'slug'" in message)
            assert "LandingError" not in message
        assert server.requests == []


def test_a_null_cursor_row_sorts_last_on_a_database_that_sorts_nulls_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite (like MySQL) sorts NULL first: the refused NULL-cursor row came first, and under
    ``on_failure: fail`` no other row was ever sent and the mark never set. It comes last: the rows
    before it go out and the mark stops at the last of them."""
    source = tmp_path / "crm.sqlite"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, version INTEGER)")
        conn.executemany("INSERT INTO contacts VALUES (?, ?, ?)", [(i, f"u{i}", i) for i in range(1, 21)])
        conn.execute("UPDATE contacts SET version = NULL WHERE id = 15")
    monkeypatch.setenv("CRM_DB_URL", f"sqlite:///{source}")
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        text = sync_yaml(
            target.url,
            source={"url_env": "CRM_DB_URL"},
            query="SELECT id, email, version FROM contacts",
            cursor="version",
            mapping={"contact_id": "id", "mail": "email"},
            on_failure="fail",
            concurrency=1,
        )
        assert not platform(text, tmp_path, instance).materialize([KEY], raise_on_error=False).success
        assert len(arrived(target)) == 19
        assert latest_metadata(instance, KEY)["cursor_after"] == {"kind": "int", "text": "20"}


def test_without_a_cursor_a_column_the_mapping_does_not_send_leaves_the_keys_alone(tmp_path: Path) -> None:
    """The key hashed the whole row: a column added to the table (never sent) gave every row a new key,
    and the target stored all 50 again. Only what is sent counts."""
    seed(tmp_path / "warehouse.duckdb", 50)
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        doc = json.loads(sync_yaml(target.url, cursor=None))
        del doc["attributes"]["query"]
        doc["attributes"]["table"] = "crm.contacts"
        plat = platform(json.dumps(doc), tmp_path, instance)
        assert plat.materialize([KEY]).success
        stored = target.stats()["stored_requests"]
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
            conn.execute("ALTER TABLE crm.contacts ADD COLUMN note VARCHAR")
        assert plat.materialize([KEY]).success
        assert target.stats()["stored_requests"] == stored


@pytest.mark.parametrize("value", ["Sun, 06 Nov 99999 08:49:37 GMT", "9" * 5000])
def test_a_retry_after_python_cannot_hold_counts_as_absent(tmp_path: Path, value: str) -> None:
    """urllib3 raised a bare ValueError for a date past the year 9999 (or a number of more than 4300 digits):
    the whole sync failed with 'year 99999 is out of range', naming neither record nor header, nothing landed."""
    seed(tmp_path / "warehouse.duckdb", 1)
    answers = iter([(503, {"Retry-After": value}, "busy"), (200, {}, {"ok": True})])
    with scripted_server(lambda request: next(answers)) as server, dg.instance_for_test() as instance:
        assert platform(sync_yaml(server.url), tmp_path, instance).materialize([KEY]).success
        assert len(server.requests) == 2
    (row,) = results(tmp_path)
    assert (row["status"], row["attempts"]) == (200, 2)


def test_a_secret_echoed_in_the_reason_phrase_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The response text was masked, the reason phrase was not: a target repeating the Authorization header
    there put the token in the results' error column and in the run's failure message."""
    seed(tmp_path / "warehouse.duckdb", 2)
    token = "push-token-0123456789-secret"
    monkeypatch.setenv("PUSH_TOKEN", token)
    with reason_echoing_server(422) as url, dg.instance_for_test() as instance:
        target = {"base_url": url, "path": "/api/contacts", "auth": {"type": "bearer", "token_env": "PUSH_TOKEN"}}
        result = platform(sync_yaml(url, target=target), tmp_path, instance).materialize([KEY], raise_on_error=False)
        assert not result.success
        message = " ".join(failure_messages(result))
    assert "HTTP 422 Refused for Bearer ***" in message and token not in message
    rows = results(tmp_path)
    assert rows and all(str(r["error"]) == "HTTP 422 Refused for Bearer ***" for r in rows)


def test_a_password_in_the_base_urls_user_info_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """REST sources masked the user info's password, syncs did not: httpx sends it as a basic Authorization
    header, and a target echoing it put it in the results and dead letters."""
    seed(tmp_path / "warehouse.duckdb", 2)

    def answer(request: dict[str, object]) -> tuple[int, dict[str, str], object]:
        headers = request["headers"]
        assert isinstance(headers, dict)
        return 422, {}, {"error": "invalid", "echo": headers.get("Authorization")}

    credentials = base64.b64encode(b"etl:pa55-w0rd-secret").decode()
    with scripted_server(answer) as server, dg.instance_for_test() as instance:
        monkeypatch.setenv("PUSH_URL", server.url.replace("http://", "http://etl:pa55-w0rd-secret@"))
        target = {"base_url_env": "PUSH_URL", "path": "/api/contacts"}
        yaml = sync_yaml(server.url, target=target, on_failure="dead_letter")
        assert platform(yaml, tmp_path, instance).materialize([KEY]).success
        assert any(credentials in json.dumps(r) for r in server.requests)  # sent and echoed
    for name in ("results", "dead_letter"):
        rows = results(tmp_path, name)
        text = json.dumps(rows, default=str)
        assert len(rows) == 2 and "Basic ***" in text
        assert credentials not in text and "pa55-w0rd-secret" not in text


@pytest.mark.parametrize("special", ["nan", "infinity"])
def test_a_nan_or_infinite_cursor_does_not_become_the_mark(tmp_path: Path, special: str) -> None:
    """The mark followed the last row read, NaN or infinity (sorted above every number): the next runs read only
    that row, and every row changed since (cursor 2.0 here) was never sent, the runs all succeeding."""
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("CREATE SCHEMA crm")
        conn.execute(
            "CREATE TABLE crm.contacts AS SELECT * FROM (VALUES (1, 'a', 1.0::DOUBLE), (2, 'b', ?::DOUBLE)) "
            "t(id, email, updated_at)",
            [special],
        )
    with push_target(tmp_path / "target.sqlite") as target, dg.instance_for_test() as instance:
        plat = platform(sync_yaml(target.url), tmp_path, instance)
        assert plat.materialize([KEY]).success
        assert latest_metadata(instance, KEY)["cursor_after"] == {"kind": "float", "text": "1.0"}
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
            conn.execute("INSERT INTO crm.contacts VALUES (3, 'c', 2.0)")
        assert plat.materialize([KEY]).success
        # row 2 is read again by every run (it compares above any mark) but is not sent again
        assert arrived(target) == Counter({1: 1, 2: 1, 3: 1})
        assert latest_metadata(instance, KEY)["cursor_after"] == {"kind": "float", "text": "2.0"}


def test_a_column_name_a_postgresql_query_repeats_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL keeps both ``id`` columns of a join; a row read as a dict kept the last, the organisation's,
    and contact 1 was written to ``/api/contacts/900`` (another record), the run succeeding."""
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    monkeypatch.setenv("CRM_DB_URL", f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/postgres")
    query = (
        "SELECT c.id, c.email, c.version, o.id FROM (VALUES (1, 'a@example.com', 1)) AS c(id, email, version) "
        "JOIN (VALUES (900, 1)) AS o(id, contact) ON o.contact = c.id"
    )
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        target = {"base_url": server.url, "path": "/api/contacts/{id}", "method": "POST"}
        text = sync_yaml(server.url, source={"url_env": "CRM_DB_URL"}, query=query, cursor="version", target=target)
        result = platform(text, tmp_path, instance).materialize([KEY], raise_on_error=False)
        assert not result.success
        message = " ".join(failure_messages(result))
        assert "sync contacts_out: column name(s) ['id'] appear more than once" in message
        assert server.requests == []


def test_a_retry_after_past_a_max_retry_after_over_six_hours_fails_at_once() -> None:
    """urllib3 caps a Retry-After at 6 hours: with ``max_retry_after`` of a day, a target asking for two days was
    waited 6 hours, then again on each retry, instead of failing the record at once."""
    answer = (429, {"Retry-After": str(2 * 86400)}, "later")
    with scripted_server(lambda request: answer) as server:
        policy = PushPolicy(max_retry_after=86400, max_retries=3)
        request = PushRequest("POST", f"{server.url}/api/contacts", b"{}", "key", (0,))

        async def send() -> list[PushResult]:
            async with HttpPusher(policy, HttpAuth(), {}, "Idempotency-Key", "test") as pusher:
                return await asyncio.wait_for(pusher.send_all([request]), 30)

        (result,) = asyncio.run(send())
        assert len(server.requests) == 1
    expected = "HTTP 429 Too Many Requests: Retry-After '172800' exceeds max_retry_after (86400s)"
    assert not result.ok and result.error == expected


def test_a_cursor_whose_values_make_no_mark_fails_before_anything_is_sent(tmp_path: Path) -> None:
    """A ``time`` cursor: every row was sent, then the run failed with a bare 'TypeError: unsupported cursor value
    type time' naming neither sync nor column, recording no mark, so every run sent every row again."""
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("CREATE SCHEMA crm")
        conn.execute(
            "CREATE TABLE crm.contacts AS SELECT * FROM (VALUES (1, 'a', TIME '01:00'), (2, 'b', TIME '02:00')) "
            "t(id, email, updated_at)"
        )
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        result = platform(sync_yaml(server.url), tmp_path, instance).materialize([KEY], raise_on_error=False)
        assert not result.success
        message = " ".join(failure_messages(result))
        assert "sync contacts_out: cursor column 'updated_at'" in message and "type time" in message
        assert server.requests == []


def domain_body(row: dict[str, object]) -> dict[str, object]:
    """The ``hook`` of the test below: fails on an address without ``@``."""
    return {"contact_id": row["id"], "domain": str(row["email"]).split("@")[1]}


def test_a_hook_failing_on_a_row_names_the_sync_and_the_record(tmp_path: Path) -> None:
    """The hook's error escaped bare: 'IndexError: list index out of range', naming neither sync nor record."""
    seed(tmp_path / "warehouse.duckdb", 3)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("UPDATE crm.contacts SET email = 'no-at-sign' WHERE id = 2")
    hook = "integration_platform_tests.test_reverse_etl:domain_body"
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        yaml = sync_yaml(server.url, mapping={}, hook=hook)
        result = platform(yaml, tmp_path, instance).materialize([KEY], raise_on_error=False)
        assert not result.success
        message = " ".join(failure_messages(result))
        assert "sync contacts_out: record [2] (idempotency key " in message
        assert f"hook {hook} failed: IndexError: list index out of range" in message
        assert server.requests == []  # the chunk holding the record is not sent


def test_a_source_url_variable_not_set_fails_naming_the_sync_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run failed with a bare ``KeyError: 'CRM_DB_URL'``, naming neither the sync nor the field."""
    monkeypatch.delenv("CRM_DB_URL", raising=False)
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        yaml = sync_yaml(server.url, source={"url_env": "CRM_DB_URL"})
        result = platform(yaml, tmp_path, instance).materialize([KEY], raise_on_error=False)
        assert not result.success
        message = " ".join(failure_messages(result))
        assert "sync contacts_out: source.url_env: the environment variable CRM_DB_URL is not set" in message
        assert server.requests == []


@pytest.mark.parametrize(
    "base",
    [
        "crm.example.com/api",
        "ftp://127.0.0.1:1",
        "http://127.0.0.1:1\n",
        " http://127.0.0.1:1",
        "http://127.0.0.1:1/\t",
    ],
)
def test_a_base_url_that_is_no_http_url_fails_the_run_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str
) -> None:
    """A base URL variable without ``https://`` (or of another scheme) was retried as a transient failure on
    every row, 6 attempts and ~15 s of backoff each (under ``dead_letter`` every row then went to the dead
    letters, the mark past them). The run fails at once naming the sync and the variable."""
    seed(tmp_path / "warehouse.duckdb", 3)
    monkeypatch.setenv("PUSH_URL", base)
    with dg.instance_for_test() as instance:
        target = {"base_url_env": "PUSH_URL", "path": "/api/contacts"}
        yaml = sync_yaml("http://unused", target=target, on_failure="dead_letter", backoff_factor=0.5)
        started = time.monotonic()
        result = platform(yaml, tmp_path, instance).materialize([KEY], raise_on_error=False)
        assert time.monotonic() - started < 10
        assert not result.success
        message = " ".join(failure_messages(result))
    why = "is not an http(s) URL" if base == base.strip() else "has a space at either end or a control character"
    assert f"sync contacts_out: target.base_url_env: the value of PUSH_URL {why}" in message
    assert not (tmp_path / "lake" / "reverse_etl" / "contacts_out_dead_letter").exists()


@pytest.mark.parametrize(
    ("target", "refusal"),
    [
        ({"idempotency_header": "Idempotency Key"}, "target.idempotency_header: 'Idempotency Key' is not"),
        ({"idempotency_header": ""}, "target.idempotency_header: '' is not"),
        ({"headers": {"X Tenant": "a"}}, "target.headers: 'X Tenant' is not"),
        ({"headers_env": {"X-Api Key": "API_KEY"}}, "target.headers_env: 'X-Api Key' is not"),
        ({"headers": {"X-Tenant": "a\nb"}}, "target.headers.X-Tenant: the value holds a line break"),
    ],
)
def test_a_header_that_cannot_be_sent_is_refused_when_the_sync_loads(target: dict[str, object], refusal: str) -> None:
    """A header name that is no HTTP token, or an inline value with a line break, was accepted: httpx refused
    every request (LocalProtocolError), and each was retried as a transient failure, row after row."""
    with dg.instance_for_test() as instance, pytest.raises(Exception, match=re.escape(refusal)):
        url = "http://127.0.0.1:9"
        platform(sync_yaml(url, target={"base_url": url, "path": "/api/contacts", **target}), REPO, instance)


@pytest.mark.parametrize(
    ("target", "refusal"),
    [
        ({"wrap_extra": {"source": "warehouse"}}, "target.wrap_extra needs target.wrap"),
        ({"wrap": "rows", "wrap_extra": {"rows": []}}, "target.wrap_extra: 'rows' is the key target.wrap"),
        ({"path": "/api/contacts/{}"}, "target.path: '/api/contacts/{}': a placeholder must name a column"),
        ({"path": "/api/contacts/{id"}, "target.path: '/api/contacts/{id': expected '}' before end of string"),
        ({"path": "/api/contacts/{id!r}"}, "target.path: '/api/contacts/{id!r}': a placeholder must name a column"),
    ],
)
def test_a_target_envelope_or_path_that_cannot_work_is_refused_when_the_sync_loads(
    target: dict[str, object], refusal: str
) -> None:
    """``wrap_extra`` without ``wrap`` was silently ignored (its fields never sent), and one holding the ``wrap``
    key replaced the rows (every row acknowledged, none sent); a path placeholder without a column name or
    with an unclosed brace failed the run with a bare ``ValueError`` naming neither sync nor field."""
    url = "http://127.0.0.1:9"
    attributes = {"base_url": url, "path": "/api/contacts", **target}
    with dg.instance_for_test() as instance, pytest.raises(Exception, match=re.escape(refusal)):
        platform(sync_yaml(url, target=attributes), REPO, instance)


@pytest.mark.parametrize(
    "end", ["  -- every contact\n", ";", " ;\n", ";  -- every contact", "; /* done */ ;", " -- Zürich\n;"]
)
def test_a_query_ending_in_a_comment_or_semicolon_is_read(tmp_path: Path, end: str) -> None:
    """The query is wrapped as ``(<query>) AS t``: a final ``-- comment`` swallowed the closing parenthesis
    and a final ``;`` stood inside it, and the run failed with a parser error at a parenthesis the user never
    wrote, naming neither sync nor query."""
    seed(tmp_path / "warehouse.duckdb", 3)
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        yaml = sync_yaml(server.url, query="SELECT id, email, updated_at FROM crm.contacts" + end)
        assert platform(yaml, tmp_path, instance).materialize([KEY]).success
        assert len(server.requests) == 3


def test_a_map_with_keys_that_are_not_text_is_sent_with_its_keys_as_text(tmp_path: Path) -> None:
    """A DuckDB MAP keyed by dates or decimals reads as a dict with such keys: ``json.dumps`` refuses them
    (its ``default`` is never asked about keys), and the run failed with a bare ``TypeError``."""
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("CREATE SCHEMA crm")
        conn.execute(
            "CREATE TABLE crm.contacts AS SELECT 1 AS id, TIMESTAMP '2026-01-01' AS updated_at, "
            "MAP {DATE '2026-01-02': 5} AS visits, MAP {1.5::DECIMAL(3, 1): 'x'} AS grades"
        )
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        for cursor in ("updated_at", None):  # without a cursor the whole row is the idempotency key
            yaml = sync_yaml(server.url, query="SELECT * FROM crm.contacts", mapping={}, cursor=cursor)
            assert platform(yaml, tmp_path, instance).materialize([KEY]).success
        bodies = [json.loads(str(request["body"])) for request in server.requests]
    assert [(b["visits"], b["grades"]) for b in bodies] == [({"2026-01-02": 5}, {"1.5": "x"})] * 2


def test_a_numeric_nan_or_infinity_from_postgresql_is_sent_as_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's NUMERIC holds ``NaN`` and (14+) ``Infinity``, read as a Python ``Decimal``: the body had the
    strings "NaN" and "Infinity" where the sync promises JSON ``null`` for NaN and infinite numbers (floats
    were nulled, decimals went through as text)."""
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    monkeypatch.setenv("CRM_DB_URL", f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/postgres")
    query = (
        "SELECT 1 AS id, 1 AS version, 'NaN'::numeric AS score, 'Infinity'::numeric AS high, "
        "'-Infinity'::numeric AS low, 1.50::numeric(4, 2) AS price"
    )
    with scripted_server(lambda request: (200, {}, {"ok": True})) as server, dg.instance_for_test() as instance:
        text = sync_yaml(server.url, source={"url_env": "CRM_DB_URL"}, query=query, cursor="version", mapping={})
        assert platform(text, tmp_path, instance).materialize([KEY]).success
        (request,) = server.requests
    body = json.loads(str(request["body"]))
    assert (body["score"], body["high"], body["low"], body["price"]) == (None, None, None, "1.50")
