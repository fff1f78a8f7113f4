"""HtmlSource against real HTML served by a real server: datasette's table pages of the chinook
database (100 rows a page, a "Next page" link), reconciled with the database itself; robots.txt
honoured; pages that are not what the YAML says fail naming the page."""

import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import pytest
from selectolax.lexbor import LexborHTMLParser

from integration_platform.core.streams import StreamSpec
from integration_platform.resources.http_api import RestApiResource
from integration_platform.sources.html.extract import (
    MAX_TABLE_COLUMNS,
    HtmlSourceError,
    HtmlStreamPlan,
    Robots,
    _layout,
    _records_of_table,
    _row_groups,
    html_pages,
)
from integration_platform_tests.rest_servers import failures_within, scripted_server
from integration_platform_tests.services import REPO, missing
from sandbox import ServerMissing
from sandbox.harness import failure_messages, landed_rows, latest_metadata, platform
from sandbox.http_servers import serve_datasette

CHINOOK = REPO / "sandbox" / "chinook" / "chinook.sqlite"


@pytest.fixture(scope="module")
def datasette() -> Iterator[str]:
    """datasette serving chinook on loopback, once for the module; yields its URL."""
    with ExitStack() as stack:
        try:
            _, url = serve_datasette(stack, CHINOOK)
        except ServerMissing as exc:
            missing(str(exc))
        yield url


def source_yaml(base_url: str, streams: str, extra: str = "") -> str:
    return f"""
type: integration_platform.components.HtmlSource
attributes:
  source: chinook_site
  base_url: {base_url}
{extra}  streams:
{streams}"""


TRACKS = """    - name: tracks
      path: /chinook/Track
      params: {_size: 100}
      rows: "table.rows-and-columns tbody tr"
      columns:
        track_id: "td.col-TrackId"
        name: "td.col-Name"
        album_id: "td.col-AlbumId em"
        composer: "td.col-Composer"
        milliseconds: "td.col-Milliseconds"
        unit_price: "td.col-UnitPrice"
        link: {css: "td.col-TrackId a", attribute: href}
      types: {track_id: int64, album_id: int64, milliseconds: int64, unit_price: float64}
      next_page: 'a[href^="http"][href*="_next="]'  # the Next page link (export links are relative)
      primary_key: [track_id]
      write_disposition: merge
"""
GENRES = """    - name: genres
      path: /chinook/Genre
      table: "table.rows-and-columns"
      header_attribute: data-column
"""


def database(sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(CHINOOK) as conn:
        return conn.execute(sql).fetchall()


def test_paged_table_pages_land_and_reconcile_with_the_database(
    datasette: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    p = platform(source_yaml(datasette, TRACKS + GENRES), tmp_path, instance)
    result = p.materialize()
    assert result.success, failure_messages(result)
    assert landed_rows(result) == {"chinook_site/tracks": 3503, "chinook_site/genres": 25}
    landed = p.query(
        "SELECT track_id, name, album_id, composer, milliseconds, unit_price FROM chinook_site.tracks ORDER BY 1"
    )
    source = database(
        "SELECT TrackId, Name, AlbumId, NULLIF(Composer, ''), Milliseconds, UnitPrice FROM Track ORDER BY 1"
    )
    assert landed == [tuple(row) for row in source]
    assert p.query("SELECT link FROM chinook_site.tracks WHERE track_id = 2")[0][0] == "/chinook/Track/2"
    genres = p.query('SELECT "GenreId", "Name" FROM chinook_site.genres ORDER BY CAST("GenreId" AS INTEGER)')
    assert genres == [(str(i), name) for i, name in database("SELECT GenreId, Name FROM Genre ORDER BY 1")]
    event = instance.get_latest_materialization_event(dg.AssetKey(["chinook_site", "tracks"]))
    assert event and event.asset_materialization
    assert event.asset_materialization.metadata["pages_fetched"].value == 36


#: The HTML documentation Debian's essential package base-passwd ships, and the master files it documents.
BASE_PASSWD_DOCS = Path("/usr/share/doc/base-passwd")
BASE_PASSWD_MASTER = Path("/usr/share/base-passwd")


class _EntryNames(HTMLParser):
    """The standard library's HTML parser as the independent reading: the text of each ``<dt>``
    of a ``<dl>`` directly inside a ``<div class="VARIABLELIST">`` (DocBook's variable lists)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []
        self.names: list[str] = []
        self.text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "dt" and [t for t, _ in self.stack[-2:]] == ["div", "dl"] and self.stack[-2][1] == "VARIABLELIST":
            self.text = []
        self.stack.append((tag, dict(attrs).get("class") or ""))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass  # elements left open (the document's <P>) end with their parent
        if tag == "dt" and self.text is not None:
            self.names.append(" ".join("".join(self.text).split()))
            self.text = None

    def handle_data(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)


def test_a_debian_packages_html_documentation_reconciles_with_the_files_it_documents(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """base-passwd's users-and-groups.html (DocBook, upper-case tags and classes), served by a real
    HTTP server: one row per documented user or group, the same names the standard library's
    parser reads, and every user and group of the package's own master files among them (all but
    ``_apt``, which base-passwd 3.6 added to the files and not to the document)."""
    page = BASE_PASSWD_DOCS / "users-and-groups.html"
    if not page.exists():
        missing(f"{page} (Debian's base-passwd package)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(BASE_PASSWD_DOCS)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stream = """    - name: entries
      path: /users-and-groups.html
      rows: "div.VARIABLELIST > dl > dt"
      columns: {name: "dt"}
"""
        p = platform(source_yaml(f"http://127.0.0.1:{server.server_address[1]}", stream), tmp_path, instance)
        result = p.materialize()
    finally:
        server.shutdown()
        server.server_close()
    assert result.success, failure_messages(result)
    reading = _EntryNames()
    reading.feed(page.read_text(encoding="utf-8"))
    assert len(reading.names) > 40
    assert landed_rows(result) == {"chinook_site/entries": len(reading.names)}
    landed = [name for (name,) in p.query("SELECT name FROM chinook_site.entries ORDER BY name")]
    assert landed == sorted(reading.names)
    documented = {part for name in landed for part in name.split(", ")}  # "nobody, nogroup" is one entry
    masters = {
        line.split(":", 1)[0]
        for master in ("passwd.master", "group.master")
        for line in (BASE_PASSWD_MASTER / master).read_text().splitlines()
    }
    assert masters - documented == {"_apt"}


class _Site(BaseHTTPRequestHandler):
    """A small site: a robots.txt, an HTML page with a table, a JSON "page", and a page whose next link
    leaves the site. ``ROBOTS`` is what /robots.txt answers (None: 404)."""

    ROBOTS: ClassVar[str | None] = None
    hits: ClassVar[list[str]] = []
    times: ClassVar[list[float]] = []
    url: ClassVar[str] = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        type(self).times.append(time.monotonic())
        if self.path == "/robots.txt":
            if self.ROBOTS is None:
                self._send(404, "text/plain", "no robots here")
            else:
                self._send(200, "text/plain", self.ROBOTS)
        elif self.path.startswith("/private") or self.path.startswith("/public"):
            table = "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>x</td></tr></table>"
            self._send(200, "text/html; charset=utf-8", f"<html><body>{table}</body></html>")
        elif self.path.startswith("/data.json"):
            self._send(200, "application/json", '{"a": 1}')
        elif self.path.startswith("/paged"):  # /paged/N links to /paged/N+1 up to 3, then to "#"
            number = int(self.path.rsplit("/", 1)[1])
            link = (
                f'<a class="next" href="/paged/{number + 1}">next</a>'
                if number < 3
                else '<a class="next" href="#">next</a>'
            )
            table = f"<table><tr><th>n</th></tr><tr><td>{number}</td></tr></table>"
            self._send(200, "text/html", f"<html><body>{table}{link}</body></html>")
        elif self.path.startswith("/leaves"):
            link = '<a class="next" href="http://198.51.100.7/steal">next</a>'
            table = "<table><tr><th>a</th></tr><tr><td>1</td></tr></table>"
            self._send(200, "text/html", f"<html><body>{table}{link}</body></html>")
        else:
            self._send(404, "text/plain", "not found")

    def _send(self, status: int, kind: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def site() -> Iterator[type[_Site]]:
    _Site.ROBOTS, _Site.hits, _Site.times = None, [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Site.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield _Site
    finally:
        server.shutdown()
        server.server_close()


def _stream(path: str, extra: str = "") -> str:
    return f"""    - name: page
      path: {path}
      table: "table"
{extra}"""


def test_robots_txt_is_honoured_unless_the_source_ignores_it(
    site: type[_Site], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    url = site.url
    site.ROBOTS = "User-agent: *\nDisallow: /private\n"
    refused = platform(source_yaml(url, _stream("/private/list")), tmp_path / "a", instance).materialize(
        raise_on_error=False
    )
    assert not refused.success
    assert any("robots.txt disallows it" in m and "/private/list" in m for m in failure_messages(refused))
    assert "/private/list" not in site.hits, "the disallowed page was never requested"
    allowed = platform(source_yaml(url, _stream("/public/list")), tmp_path / "b", instance).materialize()
    assert landed_rows(allowed) == {"chinook_site/page": 1}
    ignoring = platform(
        source_yaml(url, _stream("/private/list"), "  robots_txt: ignore\n"), tmp_path / "c", instance
    ).materialize()
    assert landed_rows(ignoring) == {"chinook_site/page": 1}
    site.ROBOTS = None  # 404: no rules (RFC 9309 2.3.1.3)
    assert platform(source_yaml(url, _stream("/private/list")), tmp_path / "d", instance).materialize().success
    # RFC 9309 matching: the longest rule wins over an earlier Allow, "*" patterns, groups of one agent merged
    site.ROBOTS = "User-agent: *\nAllow: /\nDisallow: /public/*list\n\nUser-agent: *\nDisallow: /private\n"
    for path in ("/public/list", "/private/list"):
        result = platform(source_yaml(url, _stream(path)), tmp_path / f"e{len(path)}", instance).materialize(
            raise_on_error=False
        )
        assert not result.success and any("robots.txt disallows it" in m for m in failure_messages(result)), path


def test_next_links_end_at_a_disabled_link_crawl_delay_is_kept_and_max_pages_refuses_a_partial_read(
    site: type[_Site], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    paged = _stream("/paged/1", '      next_page: "a.next"\n      types: {n: int64}\n')
    result = platform(source_yaml(site.url, paged), tmp_path / "a", instance).materialize()
    assert landed_rows(result) == {"chinook_site/page": 3}, "pages 1..3, then the '#' link ends them"
    site.ROBOTS = "User-agent: *\nCrawl-delay: 1\n"
    site.hits, site.times = [], []
    assert platform(source_yaml(site.url, paged), tmp_path / "c", instance).materialize().success
    pages = [t for path, t in zip(site.hits, site.times, strict=True) if path.startswith("/paged")]
    assert len(pages) == 3 and all(b - a >= 0.95 for a, b in itertools.pairwise(pages)), pages
    capped = platform(source_yaml(site.url, paged + "      max_pages: 2\n"), tmp_path / "b", instance)
    failed = capped.materialize(raise_on_error=False)
    assert any("more than max_pages (2) pages; nothing lands" in m for m in failure_messages(failed))


def test_a_crawl_delay_longer_than_max_retry_after_fails_instead_of_sleeping() -> None:
    """robots.txt asking ``Crawl-delay: 100000000`` (three years): the crawler slept as asked, holding the
    run. A delay longer than ``max_retry_after`` cannot be kept, so the page is not fetched and the run
    fails naming the origin and the delay; one within it is still kept."""

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], Any]:
        return 200, {"Content-Type": "text/plain"}, "User-agent: *\nCrawl-delay: 100000000\n"

    with scripted_server(answer) as site:
        robots = Robots(RestApiResource(base_url=site.url, max_retry_after=60).client("test"), "integration_platform")
        failed = failures_within(
            lambda: robots.check(f"{site.url}/list"), HtmlSourceError, doing="sleeping out the Crawl-delay"
        )
    assert [str(exc) for exc in failed] == [
        f"GET {site.url}/list: {site.url}/robots.txt asks for a Crawl-delay of 100000000s between requests, longer "
        "than max_retry_after (60s): nothing more is fetched; raise max_retry_after to keep it"
    ]
    assert [r["path"] for r in site.requests] == ["/robots.txt"]


def test_a_page_that_is_not_html_or_links_off_the_site_fails_naming_it(
    site: type[_Site], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    url = site.url
    not_html = platform(source_yaml(url, _stream("/data.json")), tmp_path / "a", instance)
    failed = not_html.materialize(raise_on_error=False)
    assert any("expected an HTML page, got Content-Type 'application/json'" in m for m in failure_messages(failed))
    leaving = platform(source_yaml(url, _stream("/leaves", '      next_page: "a.next"\n')), tmp_path / "b", instance)
    failed = leaving.materialize(raise_on_error=False)
    assert any("leads off the site" in m and "198.51.100.7" in m for m in failure_messages(failed))
    assert not (tmp_path / "b" / "lake" / "chinook_site" / "page" / "_manifests").exists(), "nothing landed"


@pytest.mark.fast
def test_a_declaration_that_cannot_work_is_refused_when_definitions_load(tmp_path: Path) -> None:
    both = """    - name: page
      path: /x
      table: "table"
      rows: "tr"
      columns: {a: "td"}
"""
    with pytest.raises(Exception, match="set 'rows' \\(with 'columns'\\) or 'table', one of them"):
        platform(source_yaml("http://127.0.0.1:9", both), tmp_path, dg.DagsterInstance.ephemeral())
    bad_type = TRACKS.replace("unit_price: float64", "unit_price: money")
    with pytest.raises(Exception, match="allowed types are"):
        platform(source_yaml("http://127.0.0.1:9", bad_type), tmp_path, dg.DagsterInstance.ephemeral())
    agent = source_yaml("http://127.0.0.1:9", GENRES, "  headers: {User-Agent: other}\n")
    with pytest.raises(Exception, match="set user_agent instead"):
        platform(agent, tmp_path, dg.DagsterInstance.ephemeral())


def _pages_of(answer: Any, **plan: Any) -> list[list[dict[str, Any]]]:
    """The records of each page the extractor reads from ``answer``'s server, robots.txt ignored."""
    with scripted_server(answer) as served:
        client = RestApiResource(base_url=served.url, max_retries=0).client("test")
        spec = StreamSpec(source="site", name="page", write_disposition="replace")
        steps = HtmlStreamPlan(spec=spec, path="/page", robots_txt="ignore", **plan)
        return [records for _, records in html_pages(steps, client)]


@pytest.mark.fast
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html", "<meta charset='utf-8'><table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode()),
        ("text/html", "<table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode()),
        (
            "text/html",
            '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
            "<table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode("cp1252"),
        ),
        (
            "text/html; charset=iso-8859-1",
            b"\xef\xbb\xbf" + "<table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode(),
        ),
        ("text/html", "\ufeff<table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode("utf-16-le")),
        ("text/html; charset=iso-8859-1", "<table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode("latin-1")),
        # a label naming no text encoding counts as absent (base64 failed the run with a bare LookupError)
        ("text/html; charset=base64", "<table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode()),
        ("text/html; charset=utf-7", "<table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode()),
        ("text/html; charset=utf-16", "<table><tr><th>a</th></tr><tr><td>café</td></tr></table>".encode("utf-16-le")),
    ],
    ids=[
        "meta-utf8",
        "no-charset-utf8",
        "http-equiv-1252",
        "bom-beats-header",
        "utf16-bom",
        "header-latin1",
        "base64-label",
        "utf7-label",
        "utf16-label-le",
    ],
)
def test_a_page_is_decoded_in_the_encoding_a_browser_finds(content_type: str, body: bytes) -> None:
    """A page is decoded as browsers decode it: a byte-order mark first, then the charset of the
    ``Content-Type``, then a ``<meta>`` charset, else UTF-8. requests decodes every ``text/html`` without a
    charset as ISO-8859-1, landing ``cafÃ©`` for a UTF-8 page saying ``<meta charset="utf-8">`` (what
    Python's own http.server sends for a .html file)."""
    pages = _pages_of(lambda request: (200, {"Content-Type": content_type}, body), table="table")
    assert pages == [[{"a": "café"}]]


@pytest.mark.fast
def test_a_tables_cells_are_laid_out_as_a_browser_shows_them() -> None:
    """Each value lands under the header of its column: a row's own ``<th>`` (a row header) counts as a
    cell, a header cell that is no ``<th>`` (an empty corner) names no column, ``rowspan`` and ``colspan``
    repeat a value in the rows and columns it spans, and a table inside a cell is that cell's text, not rows
    of the outer table. Row headers shifted every value one column left and dropped the last; a nested
    table's rows landed as rows of the outer one."""
    tables = {
        "row headers": "<table><thead><tr><th>country</th><th>pop</th></tr></thead>"
        "<tbody><tr><th>France</th><td>67</td></tr><tr><th>Spain</th><td>48</td></tr></tbody></table>",
        "corner cell": "<table><tr><td></td><th>pop</th></tr><tr><th>France</th><td>67</td></tr>"
        "<tr><th>Spain</th><td>48</td></tr></table>",
        "spans": "<table><tr><th>country</th><th>pop</th></tr><tr><td>France</td><td rowspan=2>67</td></tr>"
        "<tr><td>Spain</td></tr></table>",
        "nested": "<table id=outer><tr><th>country</th><th>pop</th></tr>"
        "<tr><td><table><tr><td>France</td></tr><tr><td>(metropolitan)</td></tr></table></td><td>67</td></tr>"
        "<tr><td>Spain</td><td>48</td></tr></table>",
    }
    expected = {
        "row headers": [{"country": "France", "pop": "67"}, {"country": "Spain", "pop": "48"}],
        "corner cell": [{"pop": "67"}, {"pop": "48"}],
        "spans": [{"country": "France", "pop": "67"}, {"country": "Spain", "pop": "67"}],
        "nested": [{"country": "France (metropolitan)", "pop": "67"}, {"country": "Spain", "pop": "48"}],
    }
    for name, table in tables.items():
        pages = _pages_of(lambda request, table=table: (200, {"Content-Type": "text/html"}, table), table="table")
        assert pages == [expected[name]], name
    colspan = "<table><tr><th>a</th><th>b</th></tr><tr><td colspan=2>both</td></tr></table>"
    pages = _pages_of(lambda request: (200, {"Content-Type": "text/html"}, colspan), table="table")
    assert pages == [[{"a": "both", "b": "both"}]]
    # a short row under a cell spanning rows: the spanned value stays in its own column, the gap is empty
    short = (
        "<table><tr><th>a</th><th>b</th><th>c</th></tr><tr><td>x</td><td>y</td><td rowspan=2>z</td></tr>"
        "<tr><td>p</td></tr></table>"
    )
    pages = _pages_of(lambda request: (200, {"Content-Type": "text/html"}, short), table="table")
    assert pages == [[{"a": "x", "b": "y", "c": "z"}, {"a": "p", "b": None, "c": "z"}]]


@pytest.mark.fast
def test_row_groups_footers_and_span_attributes_are_read_as_a_browser_reads_them() -> None:
    """A rowspan stops at the end of its row group (a header's ran into the body: the header's text landed as
    a value and a value was lost); ``rowspan=0`` spans to the group's end; a ``<tfoot>`` (a total) is no
    record; a span is its leading ASCII digits (``2x`` is 2; ``²`` failed the run with a bare ValueError)."""
    plan = HtmlStreamPlan(spec=StreamSpec(source="s", name="t", write_disposition="replace"), path="/", table="table")
    cases = {
        "<thead><tr><th rowspan=2>A</th><th>B</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody>": [
            {"A": "1", "B": "2"}
        ],
        "<tr><th>A</th><th>B</th></tr><tr><td rowspan=0>x</td><td>1</td></tr><tr><td>2</td></tr>": [
            {"A": "x", "B": "1"},
            {"A": "x", "B": "2"},
        ],
        "<thead><tr><th>A</th><th>B</th></tr></thead><tfoot><tr><td>Total</td><td>9</td></tr></tfoot>"
        "<tbody><tr><td>1</td><td>9</td></tr></tbody>": [{"A": "1", "B": "9"}],
        "<thead><tr><th>A</th><th>B</th></tr></thead><tbody><tr><td rowspan=3>x</td><td>1</td></tr></tbody>"
        "<tbody><tr><td>2</td><td>3</td></tr></tbody>": [{"A": "x", "B": "1"}, {"A": "2", "B": "3"}],
        "<tr><th>A</th><th>B</th><th>C</th></tr><tr><td colspan='2x'>1</td><td>2</td></tr>": [
            {"A": "1", "B": "1", "C": "2"}
        ],
        "<tr><th>A</th><th>B</th><th>C</th></tr><tr><td colspan='\u00b2'>1</td><td>2</td></tr>": [{"A": "1", "B": "2"}],
        "<tr><th rowspan=2>A</th><th>B</th></tr><tr><td>1</td></tr>": [{"A": None, "B": "1"}],
        # rows compared by identity: selectolax's == compares HTML, so rows like the header were dropped
        "<tr><th>k</th><th>x</th></tr><tr><th>k</th><td>v</td></tr><tr><th>k</th><td>v</td></tr>": [
            {"k": "k", "x": "v"},
            {"k": "k", "x": "v"},
        ],
        # HTML 4 put <tfoot> first: without a <thead> the header is the first body row, not the footer
        "<tfoot><tr><td>T</td><td>9</td></tr></tfoot><tbody><tr><th>A</th><th>B</th></tr>"
        "<tr><td>1</td><td>2</td></tr></tbody>": [{"A": "1", "B": "2"}],
    }
    for table, expected in cases.items():
        assert _records_of_table(LexborHTMLParser(f"<table>{table}</table>"), plan, "x") == expected, table


@pytest.mark.fast
def test_a_tables_layout_is_bounded_by_its_headers_width() -> None:
    """Cells spanning 1,000 columns and rows each made the layout quadratic: a 36 KB page took 21 s and 620 MB, a
    360 KB one did not end in 10 minutes. The layout leaves out slots beyond the header, and a header wider
    than :data:`MAX_TABLE_COLUMNS` fails the page."""
    cells = "<td colspan=1000 rowspan=1000>x</td>" * 50
    page = LexborHTMLParser("<table><tr><th>a</th><th>b</th><th>c</th></tr>" + f"<tr>{cells}</tr>" * 200 + "</table>")
    table = page.css_first("table")
    assert table is not None
    (_, rows), *_ = _row_groups(table)
    assert {len(line) for line in _layout(rows, 3)} == {3}
    plan = HtmlStreamPlan(spec=StreamSpec(source="s", name="t", write_disposition="replace"), path="/", table="table")
    assert len(_records_of_table(page, plan, "x")) == 200
    wide = LexborHTMLParser(f"<table><tr>{'<th>a</th>' * (MAX_TABLE_COLUMNS + 1)}</tr></table>")
    with pytest.raises(HtmlSourceError, match=f"more than {MAX_TABLE_COLUMNS} columns"):
        _records_of_table(wide, plan, "x")


@pytest.mark.fast
def test_a_redirect_is_followed_only_where_a_next_page_link_could_go() -> None:
    """A redirect goes where a next-page link may: on the site, to a page robots.txt allows, checked before
    it is requested. requests followed every redirect itself, so a page redirecting to a path robots.txt
    disallows was fetched and landed, and one redirecting to another host landed that host's rows."""
    table = "<table><tr><th>a</th></tr><tr><td>{}</td></tr></table>"
    with scripted_server(lambda request: (200, {"Content-Type": "text/html"}, table.format("elsewhere"))) as other:

        def answer(request: dict[str, Any]) -> tuple[int, dict[str, str], str]:
            path = request["path"]
            if path == "/robots.txt":
                return 200, {"Content-Type": "text/plain"}, "User-agent: *\nDisallow: /private\n"
            moves = {"/old": "/page", "/secret": "/private/page", "/away": f"{other.url}/page"}
            if path in moves:
                return 302, {"Location": moves[path]}, ""
            return 200, {"Content-Type": "text/html"}, table.format(path)

        with scripted_server(answer) as site:
            client = RestApiResource(base_url=site.url, max_retries=0).client("test")
            spec = StreamSpec(source="site", name="page", write_disposition="replace")
            moved = list(html_pages(HtmlStreamPlan(spec=spec, path="/old", table="table"), client))
            assert moved == [(f"{site.url}/page", [{"a": "/page"}])]
            with pytest.raises(HtmlSourceError, match=r"robots\.txt disallows it") as refused:
                list(html_pages(HtmlStreamPlan(spec=spec, path="/secret", table="table"), client))
            assert f"{site.url}/private/page" in str(refused.value)
            with pytest.raises(HtmlSourceError, match="redirects off the site") as leaving:
                list(html_pages(HtmlStreamPlan(spec=spec, path="/away", table="table"), client))
            assert other.url in str(leaving.value)
    assert "/private/page" not in [r["path"] for r in site.requests]
    assert other.requests == []


@pytest.mark.fast
def test_a_next_page_link_to_another_scheme_fails_instead_of_ending_the_pages() -> None:
    """Only ``#`` (the page itself) or ``javascript:`` is a disabled "next" that ends the pages; an
    ``ftp:``, ``data:`` or ``mailto:`` link is a next page that cannot be read here. Any scheme but http(s)
    ended the pages, landing the first part of the stream as the whole table."""
    for href in ("ftp://files.example/page/2", "data:text/html,<table></table>", "mailto:web@example.org"):
        page = f"<table><tr><th>n</th></tr><tr><td>1</td></tr></table><a class=next href='{href}'>next</a>"
        with pytest.raises(HtmlSourceError, match="leads off the site"):
            _pages_of(lambda request, page=page: (200, {"Content-Type": "text/html"}, page), **_NEXT)
    for href in ("#", "javascript:void(0)", " JavaScript:void(0)"):
        page = f"<table><tr><th>n</th></tr><tr><td>1</td></tr></table><a class=next href='{href}'>next</a>"
        pages = _pages_of(lambda request, page=page: (200, {"Content-Type": "text/html"}, page), **_NEXT)
        assert pages == [[{"n": "1"}]], href


_NEXT = {"table": "table", "next_page": "a.next"}


def test_the_rows_read_are_accounted_for_by_the_figures_shown(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """Pages of a merge stream that repeat a row (the last of a page again first on the next, as pages of
    a list that shifted while read): the materialisation's ``rows_read`` is what landed plus what was
    quarantined plus the repeats dropped, each shown. The repeats were dropped without a figure: 11 rows
    read, 9 landed, 0 quarantined, ``duplicates_dropped`` 0."""

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        number = int(request["path"].rsplit("/", 1)[1])
        ids = ([number * 3 - 1] if number > 1 else []) + [number * 3 + i for i in range(3)]
        rows = "".join(f"<tr><td>{i}</td></tr>" for i in ids)
        link = f'<a class="next" href="/paged/{number + 1}">next</a>' if number < 3 else ""
        return 200, {"Content-Type": "text/html"}, f"<table><tr><th>id</th></tr>{rows}</table>{link}"

    stream = _stream(
        "/paged/1",
        '      next_page: "a.next"\n      types: {id: int64}\n'
        "      primary_key: [id]\n      write_disposition: merge\n",
    )
    with scripted_server(answer) as served:
        result = platform(source_yaml(served.url, stream, "  robots_txt: ignore\n"), tmp_path, instance).materialize()
    shown = latest_metadata(instance, dg.AssetKey(["chinook_site", "page"]))
    assert (shown["rows_read"], shown["rows_landed"]) == (11, 9)
    accounted = ("rows_landed", "quarantined", "duplicates_dropped", "duplicate_records_dropped")
    assert shown["rows_read"] == sum(shown.get(name, 0) for name in accounted), shown
    assert landed_rows(result) == {"chinook_site/page": 9}


def test_a_declared_column_that_is_blank_on_every_page_is_text(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """Every value picked from a page is text, so a declared column without a type is text even when no
    page fills it: it was a column of Arrow's null type, shown as ``null`` in the lake's column schema and
    created as an INTEGER column in DuckDB."""
    page = "<table><tr><th>id</th><th>note</th></tr><tr><td>1</td><td></td></tr></table>"
    stream = """    - name: page
      path: /page
      rows: "tr:has(td)"
      columns: {id: "td:nth-child(1)", note: "td:nth-child(2)"}
"""
    with scripted_server(lambda request: (200, {"Content-Type": "text/html"}, page)) as served:
        p = platform(source_yaml(served.url, stream, "  robots_txt: ignore\n"), tmp_path, instance)
        assert p.materialize().success
    shown = latest_metadata(instance, dg.AssetKey(["chinook_site", "page"]))["dagster/column_schema"]
    assert [(c.name, c.type) for c in shown.columns] == [("id", "string"), ("note", "string")]
    types = p.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'page'")
    assert ("note", "VARCHAR") in types
