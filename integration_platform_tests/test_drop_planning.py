"""The drop sensor's decisions, without a server: the lake's manifests are its memory (landings that
predate recorded versions included), the cursor holds only what has not landed, and the per-tick limit
leaves the rest for later."""

import dataclasses

import pytest

from integration_platform.sources.files.drops import LANDED_FILES, DropRules, DropState, landed, plan_tick, version
from integration_platform.sources.files.remote_files import RemoteFile

pytestmark = pytest.mark.fast

RULES = DropRules(glob="drop-*.csv")


def drop(day: str, size: int = 100, mtime: float = 1_700_000_000) -> RemoteFile:
    name = f"drop-{day.replace('-', '')}.csv"
    return RemoteFile(path=f"/in/{name}", name=name, size=size, mtime=mtime)


def twice(
    listing: list[RemoteFile], lake_manifests: list[tuple[str | None, dict[str, object], float, str]]
) -> list[str]:
    """The partitions requested at the second of two looks at the same listing (stable by then)."""
    lake = landed(lake_manifests)
    first = plan_tick(listing, DropState(), RULES, 100, lake)
    assert first.partitions == {}
    return sorted(plan_tick(listing, first.state, RULES, 100, lake).partitions)


def test_a_landing_that_recorded_versions_is_trusted_for_that_version_only() -> None:
    one, two = drop("2024-01-01"), drop("2024-01-02")
    manifests: list[tuple[str | None, dict[str, object], float, str]] = [
        ("2024-01-01", {LANDED_FILES: {one.name: version(one)}}, 1_800_000_000, "l1")
    ]
    assert twice([one, two], manifests) == ["2024-01-02"]
    republished = drop("2024-01-01", size=120)
    assert twice([republished, two], manifests) == ["2024-01-01", "2024-01-02"]


def test_a_landing_without_recorded_versions_holds_its_partition_files_no_newer_than_it() -> None:
    """Landings made before manifests recorded files: judged by landing time, so an upgrade re-lands nothing."""
    old, newer = drop("2024-01-01", mtime=1_700_000_000), drop("2024-01-02", mtime=1_700_000_000)
    manifests: list[tuple[str | None, dict[str, object], float, str]] = [
        ("2024-01-01", {}, 1_700_000_500, "l1"),
        ("2024-01-02", {}, 1_699_999_000, "l2"),  # the file changed after that landing
    ]
    assert twice([old, newer], manifests) == ["2024-01-02"]


def test_the_cursor_keeps_only_what_has_not_landed() -> None:
    files = [drop(f"2024-01-{d:02d}") for d in range(1, 6)]
    lake = landed([])
    seen = plan_tick(files, DropState(), RULES, 2, lake)
    requested = plan_tick(files, seen.state, RULES, 2, lake)
    assert sorted(requested.partitions) == ["2024-01-01", "2024-01-02"]  # at most 2 per tick
    later = plan_tick(files, requested.state, RULES, 2, lake)
    assert sorted(later.partitions) == ["2024-01-03", "2024-01-04"] and len(later.in_flight) == 2
    done = landed([(None, {LANDED_FILES: {f.name: version(f) for f in files}}, 0.0, "l1")])
    after = plan_tick(files, later.state, RULES, 2, done)
    assert after.partitions == {} and after.state == DropState() and after.landed == 5
    assert after.skip_reason(5) == "5 file(s) listed; 5 already in the lake"


def test_a_file_dated_outside_the_partitions_is_reported_not_requested() -> None:
    """A request for a partition key the stream lacks would fail the whole tick, in-range days included."""
    files = [drop("2023-12-31"), drop("2024-01-01"), drop("2024-02-01")]
    january = {"2024-01-01"}.__contains__
    first = plan_tick(files, DropState(), RULES, 100, landed([]), january)
    second = plan_tick(files, first.state, RULES, 100, landed([]), january)
    assert sorted(second.partitions) == ["2024-01-01"]
    assert second.outside == ["drop-20231231.csv", "drop-20240201.csv"]
    assert "2 dated outside the stream's partitions (drop-20231231.csv, drop-20240201.csv)" in second.skip_reason(3)


def test_a_file_the_lake_stopped_holding_gets_a_new_run_key_when_it_comes_again() -> None:
    """The day landed from A, then from B alone (A deleted at the source), then A re-sent unchanged: the
    run key held only the partition and the files' versions, so A's second request reused the key of
    its first run, which Dagster never runs again, and the sensor said "requested, not landed yet" for ever."""
    a = drop("2024-01-01")
    b = RemoteFile(path="/in/drop-20240101-b.csv", name="drop-20240101-b.csv", size=200, mtime=1_700_000_100)
    used: set[str] = set()  # Dagster's memory of the sensor's run keys

    def runs(listing: list[RemoteFile], lake: list[tuple[str | None, dict[str, object], float, str]]) -> list[str]:
        held = landed(lake)
        seen = plan_tick(listing, DropState(), RULES, 100, held)
        requested = plan_tick(listing, seen.state, RULES, 100, held)
        keys = [requested.run_key(p) for p in sorted(requested.partitions)]
        new = [k for k in keys if k not in used]
        used.update(keys)
        return new

    assert len(runs([a], [])) == 1
    from_b: list[tuple[str | None, dict[str, object], float, str]] = [
        ("2024-01-01", {LANDED_FILES: {b.name: version(b)}}, 1_700_000_200, "landing-b")
    ]
    assert len(runs([a, b], from_b)) == 1, "A is requested again and its run key is new: Dagster runs it"
    assert runs([a, b], from_b) == [], "while the lake is unchanged the key is the same: one run"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("orders_20210101.csv", "2021-01-01"),
        ("orders_2021-01-01_v2.csv", "2021-01-01"),
        ("orders_2021010109.csv", "2021-01-01"),  # and an hour
        ("orders_20210101093000.csv", "2021-01-01"),  # and a time
        ("export_1609459200_20210101.csv", "2021-01-01"),  # a Unix time first: 1609-45-92 is no date
        ("export_1700101234_20231116.csv", "2023-11-16"),  # nor is 1700-10-12 at hour 34
        ("orders_2021123199.csv", None),  # hour 99
        ("orders_120210101.csv", None),  # nine digits: no date, not 1202-10-10
        ("orders_202101011.csv", None),
        ("orders_20210230.csv", None),  # 30 February
    ],
)
def test_the_default_date_stands_alone_and_is_a_real_day(name: str, key: str | None) -> None:
    file = RemoteFile(path=f"/in/{name}", name=name, size=1, mtime=1_700_000_000)
    assert DropRules(glob="orders_*.csv").partition_key(file) == key


def test_a_name_without_a_valid_date_is_reported_not_requested() -> None:
    rules = DropRules(glob="orders_*.csv")
    files = [
        RemoteFile(path=f"/in/{n}", name=n, size=1, mtime=1) for n in ("orders_120210101.csv", "orders_20210102.csv")
    ]
    first = plan_tick(files, DropState(), rules, 100, landed([]))
    second = plan_tick(files, first.state, rules, 100, landed([]))
    assert sorted(second.partitions) == ["2021-01-02"]
    assert "1 without a valid date in the name (orders_120210101.csv)" in second.skip_reason(2)


def test_a_marker_older_than_its_file_marks_it_on_a_server_not_in_a_bucket() -> None:
    """On a file server a marker older than its file marks an earlier version (the file may be being re-sent);
    a bucket lists an object only once uploaded, and parallel uploaders finish the small marker first."""
    data = RemoteFile(path="/in/drop-20240101.csv", name="drop-20240101.csv", size=200, mtime=1_700_000_100)
    marker = RemoteFile(path="/in/drop-20240101.csv.done", name="drop-20240101.csv.done", size=0, mtime=1_700_000_050)
    server = DropRules(glob="drop-*.csv", marker_suffix=".done")
    bucket = DropRules(glob="drop-*.csv", marker_suffix=".done", marker_after_file=False)
    assert server.marked([data, marker]) == set()
    assert bucket.marked([data, marker]) == {"drop-20240101.csv"}
    same_second = dataclasses.replace(marker, mtime=1_700_000_100.0)
    assert server.marked([dataclasses.replace(data, mtime=1_700_000_100.9), same_second]) == {"drop-20240101.csv"}


def test_a_day_waits_while_another_of_its_files_is_not_stable() -> None:
    """Its run would land every file of the day listed, the one still being written half."""
    a = drop("2024-01-01")
    b = RemoteFile(path="/in/drop-20240101-b.csv", name="drop-20240101-b.csv", size=10, mtime=1_700_000_100)
    first = plan_tick([a], DropState(), RULES, 100, landed([]))
    second = plan_tick([a, b], first.state, RULES, 100, landed([]))
    assert second.partitions == {} and second.state.requested == {}
    assert "1 stable, waiting for another file of their partition (drop-20240101.csv)" in second.skip_reason(2)
    third = plan_tick([a, b], second.state, RULES, 100, landed([]))
    assert {k: [f.name for f in v] for k, v in third.partitions.items()} == {"2024-01-01": [b.name, a.name]}
    marked = DropRules(glob="drop-*.csv", marker_suffix=".done")  # the run leaves out the unmarked file
    done = RemoteFile(path="/in/drop-20240101.csv.done", name="drop-20240101.csv.done", size=0, mtime=1_800_000_000)
    assert list(plan_tick([a, b, done], DropState(), marked, 100, landed([])).partitions) == ["2024-01-01"]
