"""HTML extraction: datasette's chinook table pages read by the platform's HtmlSource extractor, against
a plain requests + BeautifulSoup loop (the script a user would write) and the fetch alone (the limit).

Usage::

    .venv/bin/python benchmarks/html_extract.py            # 3 runs

Server: datasette (``sandbox.http_servers.serve_datasette``) serving ``sandbox/chinook/chinook.sqlite``
on loopback, started untimed. Pages: ``/chinook/PlaylistTrack?_size=100`` (8,715 rows, 88 pages) and
``/chinook/Track?_size=100`` (3,503 rows, 36 pages), following the "Next page" link. Each method
runs in a fresh process and reads both tables; each checks its row count after the timed part:

- ``platform`` (platform): ``integration_platform.sources.html.extract.extract_html`` (the shared HTTP
  client with its retries, robots.txt read once, selectolax, records typed and converted to Arrow;
  a value that does not convert would be quarantined, so the row count checks the selectors too).
- ``requests_bs4`` (peer): ``requests.Session`` GET per page, ``BeautifulSoup(html, "lxml")`` and
  ``select`` / ``select_one`` with the same selectors, the next link followed; records as dicts.
- ``fetch_only`` (limit): the same GETs (URLs listed by the parent beforehand), bodies read, not parsed.

The platform also reads robots.txt once per stream: datasette answers its 404 after about 1 s, so
2 s of the platform's time is that (measured in-process: pages without robots.txt 6.5 s, the bare
GETs 5.6 s).
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from common import Method, child_report, parse_args, python_child, report, run_interleaved, select, warm_imports

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
#: table -> ({column: its CSS selector within a row}, its rows); a foreign key's cell shows the label
#: of the row it points to and the key itself in an <em>.
TABLES = {
    "PlaylistTrack": ({"PlaylistId": "td.col-PlaylistId em", "TrackId": "td.col-TrackId em"}, 8715),
    "Track": ({c: f"td.col-{c}" for c in ("TrackId", "Name", "Composer", "Milliseconds", "Bytes", "UnitPrice")}, 3503),
}
ROW = "table.rows-and-columns tbody tr"
NEXT = 'a[href^="http"][href*="_next="]'
TYPES = {"PlaylistId": "int64", "TrackId": "int64", "Milliseconds": "int64", "Bytes": "int64", "UnitPrice": "float64"}


def _plan(table: str) -> Any:
    from integration_platform.core.streams import StreamSpec
    from integration_platform.sources.html.extract import HtmlColumn, HtmlStreamPlan

    columns, _ = TABLES[table]
    return HtmlStreamPlan(
        spec=StreamSpec(source="bench", name=table.lower(), write_disposition="replace"),
        path=f"/chinook/{table}",
        params={"_size": "100"},
        rows=ROW,
        columns=tuple(HtmlColumn(c, css) for c, css in columns.items()),
        next_page=NEXT,
        types=tuple((c, TYPES[c]) for c in columns if c in TYPES),
    )


def run_platform(args: argparse.Namespace) -> None:
    from contextlib import ExitStack

    from integration_platform.core.extract import ExtractionReport, RunScope
    from integration_platform.resources.http_api import RestApiResource
    from integration_platform.sources.html.extract import extract_html

    site = RestApiResource(base_url=args.url)

    def work() -> dict[str, Any]:
        rows = pages = 0
        for table in TABLES:
            client, report = site.client("bench"), ExtractionReport(scope=RunScope(ExitStack()))
            try:
                rows += extract_html(_plan(table), client, report).read_all().num_rows
            finally:
                client.close()
            pages += report.metadata["pages_fetched"]
        return {"rows": rows, "pages": pages}

    child_report(work)


def run_requests_bs4(args: argparse.Namespace) -> None:
    from urllib.parse import urljoin

    import requests
    from bs4 import BeautifulSoup

    def work() -> dict[str, Any]:
        rows = pages = 0
        with requests.Session() as session:
            for table, (columns, _) in TABLES.items():
                url: str | None = f"{args.url}/chinook/{table}?_size=100"
                records = []
                while url:
                    response = session.get(url, timeout=60)
                    response.raise_for_status()
                    soup = BeautifulSoup(response.text, "lxml")
                    for row in soup.select(ROW):
                        cells = {c: row.select_one(css) for c, css in columns.items()}
                        records.append({c: n.get_text(strip=True) if n else None for c, n in cells.items()})
                    link = soup.select_one(NEXT)
                    url = urljoin(response.url, str(link["href"])) if link else None
                    pages += 1
                rows += len(records)
        return {"rows": rows, "pages": pages}

    child_report(work)


def run_fetch_only(args: argparse.Namespace) -> None:
    import requests

    urls = Path(args.urls).read_text().split()

    def work() -> dict[str, Any]:
        size = 0
        with requests.Session() as session:
            for url in urls:
                response = session.get(url, timeout=60)
                response.raise_for_status()
                size += len(response.content)
        return {"pages": len(urls), "out_bytes": size}

    child_report(work)


def page_urls(url: str) -> list[str]:
    """Every page URL the methods read, in order (walked once by the parent, untimed)."""
    from urllib.parse import urljoin

    import requests
    from selectolax.lexbor import LexborHTMLParser

    found = []
    for table in TABLES:
        page: str | None = f"{url}/chinook/{table}?_size=100"
        while page:
            found.append(page)
            response = requests.get(page, timeout=60)
            link = LexborHTMLParser(response.text).css_first(NEXT)
            page = urljoin(response.url, link.attributes["href"] or "") if link is not None else None
    return found


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as parent start datasette and run every method; as child run one."""
    parser = argparse.ArgumentParser(prog="html_extract.py", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        {"platform": run_platform, "requests_bs4": run_requests_bs4, "fetch_only": run_fetch_only}[args.child](args)
        return
    import tempfile
    from contextlib import ExitStack

    from sandbox import ServerMissing
    from sandbox.http_servers import serve_datasette

    rows = sum(r for _, r in TABLES.values())
    try:
        with ExitStack() as stack:
            _, url = serve_datasette(stack, REPO / "sandbox" / "chinook" / "chinook.sqlite")
            urls = page_urls(url)
            listing = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "urls.txt"
            listing.write_text("\n".join(urls))
            common = ["--url", url, "--urls", str(listing)]
            methods = [
                Method("platform", "platform", python_child(SCRIPT, "platform", *common), rows),
                Method("requests_bs4", "peer", python_child(SCRIPT, "requests_bs4", *common), rows),
                Method(
                    "fetch_only",
                    "limit",
                    python_child(SCRIPT, "fetch_only", *common),
                    rows,
                    note="the same pages fetched, not parsed",
                ),
            ]
            methods = select(methods, args.methods, always=("fetch_only",))
            print(
                f"html_extract: {len(methods)} methods x {args.runs} runs, {len(urls)} pages, {rows:,} rows from {url}"
            )
            summaries = run_interleaved(
                methods, args.runs, warmup=[warm_imports("bs4", "selectolax.lexbor", "requests")]
            )
            for summary in summaries:
                for sample in summary.samples:
                    got = sample.report.get("rows") if summary.method.name != "fetch_only" else None
                    if got is not None and got != rows:
                        raise SystemExit(f"{summary.method.name}: {got} rows, expected {rows}")
            report("html_extract", summaries, reference="fetch_only", bytes_label="not measured")
            seconds = {s.method.name: s.seconds for s in summaries}
            if "platform" in seconds and "requests_bs4" in seconds:
                print(
                    f"\nplatform rate / requests+BeautifulSoup: {seconds['requests_bs4'] / seconds['platform']:.2f}x; "
                    f"/ fetch alone: {seconds['fetch_only'] / seconds['platform']:.2f}x"
                )
    except ServerMissing as exc:
        raise SystemExit(f"html_extract: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
