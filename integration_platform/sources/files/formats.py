"""Dropped files -> Arrow tables: CSV, JSON, NDJSON, Parquet, XML and Excel.

Parsing is the libraries' job: pyarrow's CSV reader (its ``invalid_row_handler`` sets rows
with the wrong column count aside), ``json``, pyarrow's Parquet reader, lxml (records found
by an XPath) and openpyxl (one sheet, first row = header). JSON-shaped records (JSON, NDJSON,
XML, Excel rows) go through :class:`~integration_platform.core.records.JsonRecords`, the
same conversion REST pages use.

:func:`read_file` returns the table and the records it set aside; a file that cannot be
parsed at all raises :class:`FileFormatError` naming the file and the reason.
"""

import json
import re
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from integration_platform.assets.config_model import SafeModel
from integration_platform.core.json_paths import select_records
from integration_platform.core.names import implausible_column_names
from integration_platform.core.records import JsonRecords, Rejected

FileFormatName = Literal["csv", "json", "ndjson", "parquet", "xml", "excel"]


class FileFormatError(ValueError):
    """A file could not be parsed at all (names the file and the reason); nothing of it lands."""


class CsvOptions(SafeModel, dg.Resolvable):
    """CSV dialect (RFC 4180 by default)."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    header: bool = Field(default=True, description="First row holds the column names.")
    column_names: list[str] = Field(default_factory=list, description="Names when there is no header.")
    null_values: list[str] = Field(default_factory=lambda: [""], description="Strings read as NULL.")
    skip_rows: int = Field(
        default=0,
        ge=0,
        description="Lines to skip before the header; with column_names (and header: true), the lines skipped "
        "include the header, whose columns column_names renames.",
    )
    on_cut_last_line: Literal["fail", "quarantine"] = Field(
        default="fail", description="A last line without line end and with the wrong column count: a cut file."
    )

    @model_validator(mode="after")
    def _names_without_header(self) -> "CsvOptions":
        """Raises ``ValueError`` for ``column_names`` with ``header: true`` and no ``skip_rows``: pyarrow then
        reads no names from the file, and its header line landed as a row of data (and made every typed
        column text). With ``skip_rows`` the header is skipped, and ``column_names`` renames its columns."""
        if self.column_names and self.header and not self.skip_rows:
            raise ValueError(
                "csv: column_names names the columns of a file without a header: set header: false, or "
                "skip_rows: 1 to rename a header's columns (with header: true the file's header line landed as a "
                "row of data)"
            )
        return self


class FileFormat(SafeModel, dg.Resolvable):
    """How the files are parsed; the options of other formats are ignored."""

    type: FileFormatName = "csv"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    records: str | None = Field(default=None, description="JSON: JSON path of the records ($ = the body).")
    record_path: str | None = Field(default=None, description="XML: XPath of the record elements, e.g. //row.")
    sheet: str | int = Field(default=0, description="Excel: sheet name or 0-based index.")


def _line_of(path: Path, encoding: str, text: str, cache: dict[str, Any]) -> int | None:
    """The line where the rejected row ``text`` stands (pyarrow does not number rows when quoted
    values may hold newlines): the first whole-line occurrence after the one an earlier rejected
    row with the same text claimed (a prefix of a longer line, or an earlier copy of the same row,
    is not it). The file is read only when a row was rejected."""
    if "content" not in cache:
        cache["content"] = path.read_text(encoding=encoding, errors="replace")
        cache["next"] = {}  # rejected text -> where the search for its next copy starts
    content: str = cache["content"]
    start = cache["next"].get(text, 0)
    while (position := content.find(text, start)) >= 0:
        end = position + len(text)
        start = position + 1
        if (position == 0 or content[position - 1] == "\n") and (end == len(content) or content[end] in "\r\n"):
            cache["next"][text] = start
            return content.count("\n", 0, position) + 1
    return None


def _ascii_compatible(encoding: str) -> bool:
    """Whether ``encoding`` writes ASCII as ASCII bytes (UTF-8, Latin-1, ...; not UTF-16/32), so
    the byte-level checks below can look for ``\\n``, digits and delimiters directly."""
    return "\n,0".encode(encoding, errors="replace") == b"\n,0"


def _unterminated_tail(path: Path, encoding: str) -> str | None:
    """The file's last line when it has no line end (a cut file, or one written without a final
    newline; only a cut one also has the wrong column count), else ``None``. Reads the last 64 KiB;
    ``None`` for an encoding that is not ASCII-compatible (not checked)."""
    if not _ascii_compatible(encoding):
        return None
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, 2) - 65536))
        tail = f.read()
    if not tail or tail.endswith(b"\n"):
        return None
    return tail.rsplit(b"\n", 1)[-1].decode(encoding, errors="replace").rstrip("\r")


#: A file of at most this many bytes whose lines after ``skip_rows`` hold no line end is read from memory
#: with one added: pyarrow's reader raises "Empty CSV file or block" for a file whose only line (its header,
#: or a file's one row without header) has none, and a header-only file written without a final newline
#: (an empty day's export, ``"\n".join([header, *rows])``) failed its run.
ONE_LINE_BYTES = 64 << 10


def _source(path: Path, options: CsvOptions, cut: str | None) -> Path | bytes:
    """What pyarrow reads of ``path``: the path, or its bytes with a line end added (:data:`ONE_LINE_BYTES`);
    ``cut``: the file's last line when it has no line end (:func:`_unterminated_tail`)."""
    if cut is None or path.stat().st_size > ONE_LINE_BYTES:
        return path
    data = path.read_bytes()
    return data + b"\n" if data.count(b"\n") <= options.skip_rows else path


def _ends_in_quotes(path: Path, options: CsvOptions) -> bool:
    """Whether the file (lacking its final line end) ends inside a quoted value: cut while that value was
    written, which pyarrow reads as a whole value up to the cut. A file holding a quote character is read
    whole and scanned from the start (:func:`_open_quote_scan`, linear: 0.1-0.17 s per 10 MB). The count of
    quotes says nothing: a quote inside an unquoted field (``5'11"``) is a plain character to pyarrow, and a
    file with one such quote and a cut quoted value had an even count and landed the cut value.
    ``False`` for an encoding that is not ASCII-compatible (not checked)."""
    quote = options.quote_char.encode()
    if not _ascii_compatible(options.encoding):
        return False
    data = path.read_bytes()
    if quote not in data:
        return False
    data = data.removeprefix(b"\xef\xbb\xbf")  # pyarrow drops a UTF-8 byte-order mark
    for _ in range(options.skip_rows):
        data = data.partition(b"\n")[2]
    return _open_quote_scan(options).fullmatch(data) is None


def _open_quote_scan(options: CsvOptions) -> re.Pattern[bytes]:
    """Matches a whole CSV text that does not end inside a quoted value, as pyarrow reads quotes: a quote
    opens a value only at a field's start; in a quoted value a doubled quote is one quote and a single one
    closes it; what follows up to the next delimiter or line end is plain. Possessive, so it takes each
    quote as pyarrow does, never backtracking to read a doubled quote as a closing one."""
    q, d = re.escape(options.quote_char.encode()), re.escape(options.delimiter.encode())
    field = rb"(?:" + q + rb"(?:[^" + q + rb"]|" + q + q + rb")*+" + q + rb"[^" + d + rb"\r\n]*+|(?!" + q
    field += rb")[^" + d + rb"\r\n]*+)"
    return re.compile(field + rb"(?:[" + d + rb"\r\n]" + field + rb")*+")


def _open(source: Path | bytes) -> Path | pa.BufferReader:
    return pa.BufferReader(source) if isinstance(source, bytes) else source


def _csv(path: Path, options: CsvOptions, origin: str, rejected: list[Rejected]) -> pa.Table:

    cache: dict[str, Any] = {}
    cut = _unterminated_tail(path, options.encoding)
    source = _source(path, options, cut)

    def invalid(row: Any) -> str:
        number = row.number if row.number is not None else _line_of(path, options.encoding, row.text, cache)
        where = f"{origin} line {number}" if number is not None else origin
        reason = f"expected {row.expected_columns} columns, got {row.actual_columns}"
        if cut and row.text.rstrip("\r\n") == cut and options.on_cut_last_line == "fail":
            cache["cut"] = (
                f"{where}: the last line is cut ({reason}, no line end): the file is still being written or "
                "was truncated; it lands once complete (or set csv.on_cut_last_line: quarantine)"
            )
            return "skip"  # an exception raised here would reach the caller as pyarrow's own parse error
        if cut and row.text.rstrip("\r\n").endswith(cut):
            cache["last set aside"] = True
        rejected.append(Rejected(where, reason, row.text))
        return "skip"

    read = pv.ReadOptions(
        encoding=options.encoding,
        skip_rows=options.skip_rows,
        column_names=options.column_names or None,
        autogenerate_column_names=not options.header and not options.column_names,
        block_size=4 << 20,
    )
    parse = pv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote_char,
        newlines_in_values=True,
        invalid_row_handler=invalid,
    )
    convert = pv.ConvertOptions(null_values=options.null_values, strings_can_be_null=True)
    table = pv.read_csv(_open(source), read_options=read, parse_options=parse, convert_options=convert)
    if "cut" in cache:
        raise FileFormatError(cache["cut"])
    if cut is not None and "last set aside" not in cache and table.num_rows and _ends_in_quotes(path, options):
        # its column count may be right: the cut value reads as whole, without its end
        line = path.read_bytes().count(b"\n") + 1
        reason = f"a quoted value without its closing {options.quote_char}, no line end"
        if options.on_cut_last_line == "fail":
            raise FileFormatError(
                f"{origin} line {line}: the last line is cut ({reason}): the file is still being written or was "
                "truncated; it lands once complete (or set csv.on_cut_last_line: quarantine)"
            )
        rejected.append(Rejected(f"{origin} line {line}", reason, cut))
        cache["drop last"] = True
    names = [name or f"column_{i}" for i, name in enumerate(table.column_names)]  # a blank header cell
    bad = implausible_column_names(names)
    if bad:  # it would become a warehouse column for good
        raise FileFormatError(
            f"{origin}: the header holds {len(bad)} name(s) that are not column names: {bad[0][:60]!r}"
        )
    _check_text(path, table, names, options.encoding, origin)
    table = _keep_codes_as_text(source, table, read, parse, convert, options).rename_columns(names)
    return table.slice(0, table.num_rows - 1) if "drop last" in cache else table


def _check_text(path: Path, table: pa.Table, names: list[str], encoding: str, origin: str) -> None:
    """Raise :class:`FileFormatError` naming the file, line and column when pyarrow read a column as
    ``binary``: its bytes are not text in ``encoding`` (a Latin-1 "Köln" in a UTF-8 stream). Landed,
    the column became the stream's ``binary`` type for good, and every later file's text in it landed
    as bytes (a BLOB in the warehouse)."""
    binary = [name for name, f in zip(names, table.schema, strict=True) if pa.types.is_binary(f.type)]
    if not binary:
        return
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        start = exc.start if isinstance(exc, UnicodeDecodeError) else 0
        line = data.count(b"\n", 0, start) + 1
        where = f"{origin} line {line}"
        found = f" ({data[max(0, start - 20) : start + 20]!r})"
    else:
        where, found = origin, ""
    raise FileFormatError(
        f"{where}: column {binary[0]!r} holds bytes that are not {encoding} text{found}: set csv.encoding to "
        "the file's encoding (latin-1, cp1252, ...)"
    )


#: Values a number type would change: a leading zero ("066", "-01") in any numeric column; in a
#: column typed double, also an integer of 16 or more digits (account and card numbers), which a
#: double does not hold exactly (an int64 column holds up to 19 digits exactly).
_LEADING_ZERO = r"^[+-]?0[0-9]"
_CODE = r"^[+-]?(0[0-9]|[0-9]{16,})"


def _keep_codes_as_text(
    source: Path | bytes,
    table: pa.Table,
    read: pv.ReadOptions,
    parse: pv.ParseOptions,
    convert: pv.ConvertOptions,
    options: CsvOptions,
) -> pa.Table:
    """``table`` with every column pyarrow typed as a number that holds a code (:data:`_CODE`,
    :data:`_LEADING_ZERO`) read again as text, so "066" stays "066" (a declared column type still wins later).

    Only the numeric columns are read a second time, as text. Reading them is cheaper than
    proving from the raw bytes that no such field exists: on an 80 MB file of 9 numeric columns the
    re-read took 0.09 s and a byte-level regex scan 1.4 s; on a 5 KB daily drop 0.25 ms and 0.43 ms."""
    numeric = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    if not numeric:
        return table
    as_text = pv.ConvertOptions(
        null_values=options.null_values,
        strings_can_be_null=True,
        include_columns=numeric,
        column_types={name: pa.string() for name in numeric},
    )
    quiet = pv.ParseOptions(
        delimiter=parse.delimiter,
        quote_char=parse.quote_char,
        newlines_in_values=True,
        invalid_row_handler=lambda _: "skip",  # already set aside by the first read
    )
    text = pv.read_csv(_open(source), read_options=read, parse_options=quiet, convert_options=as_text)
    for code, names in (
        (_CODE, [name for name in numeric if pa.types.is_floating(table.schema.field(name).type)]),
        (_LEADING_ZERO, [name for name in numeric if pa.types.is_integer(table.schema.field(name).type)]),
    ):
        for name in _columns_matching(text, names, code):
            table = table.set_column(table.schema.get_field_index(name), name, text.column(name))
    return table


def _columns_matching(table: pa.Table, names: list[str], pattern: str) -> list[str]:
    """The columns among ``names`` (string columns of ``table``) with a value matching ``pattern``.

    The columns are matched as one chunked array, so the pattern is compiled once per file, not
    once per column: on a 21-row file of 25 numeric columns, per-column matching took 0.5 of the
    file's 1.7 ms; on 8 columns of 1M rows both take about 0.25 s."""
    rows = table.num_rows
    if not names or not rows:
        return []
    values = pa.chunked_array([chunk for name in names for chunk in table.column(name).chunks], pa.string())
    matched = pc.match_substring_regex(values, pattern)
    return [name for i, name in enumerate(names) if pc.any(matched.slice(i * rows, rows)).as_py()]


def _json_records(records: list[Any], origin: str, rejected: list[Rejected], stream: str) -> pa.Table:
    converter = JsonRecords(stream, on_conflict="quarantine")
    table = converter.convert(records, origin)
    rejected.extend(converter.rejected)
    return table


def _ndjson(path: Path, origin: str, rejected: list[Rejected]) -> list[Any]:
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                rejected.append(Rejected(f"{origin} line {number}", f"invalid JSON: {exc.msg}", line.rstrip("\n")))
    return records


def _xml(path: Path, record_path: str) -> list[dict[str, Any]]:
    from lxml import etree  # type: ignore[import-untyped]

    tree = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
    records = []
    for element in tree.xpath(record_path):
        record: dict[str, Any] = dict(element.attrib)
        for child in element:
            if isinstance(child.tag, str):
                record[etree.QName(child).localname] = child.text
        records.append(record)
    return records


def _excel(path: Path, sheet: str | int) -> list[dict[str, Any]]:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        worksheet = workbook[sheet] if isinstance(sheet, str) else workbook.worksheets[sheet]
        rows = worksheet.iter_rows(values_only=True)
        header = [str(cell) if cell is not None else f"column_{i}" for i, cell in enumerate(next(rows, ()))]
        return [dict(zip(header, row, strict=False)) for row in rows if any(cell is not None for cell in row)]
    finally:
        workbook.close()


#: How an HTML page starts (an error page saved under a drop's name: "502 Bad Gateway").
_HTML = re.compile(rb"^\s*(?:<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>])", re.IGNORECASE)


def _sniff(path: Path, kind: FileFormatName, origin: str, encoding: str = "utf-8") -> None:
    """:func:`sniff_head` of the file's first 4 KiB."""
    with path.open("rb") as f:
        sniff_head(f.read(4096), kind, origin, encoding)


def sniff_head(head: bytes, kind: FileFormatName, origin: str, encoding: str = "utf-8") -> None:
    """Raise :class:`FileFormatError` for a file (``head``: its first 4 KiB) that is not what its
    format says, before any parser sees it: empty, an HTML page (for every format but XML), or
    binary (a NUL byte in the first 4 KiB of a text format in an encoding without NUL bytes: not
    UTF-16 or UTF-32)."""
    if not head.strip():
        raise FileFormatError(f"{origin}: the file is empty")
    if kind != "xml" and _HTML.match(head.removeprefix(b"\xef\xbb\xbf")):
        first = head.decode("utf-8", errors="replace").strip().splitlines()[0][:80]
        raise FileFormatError(f"{origin}: is an HTML page, not {kind} (it starts {first!r})")
    # UTF-16/32 text holds NUL bytes: a configured wide encoding, or an XML file with a UTF-16/32
    # byte-order mark (the XML parser honours it; other formats read the encoding configured)
    bom = kind == "xml" and head.startswith((b"\xff\xfe", b"\xfe\xff"))
    wide = not _ascii_compatible(encoding) or bom
    if kind in ("csv", "json", "ndjson", "xml") and not wide and b"\x00" in head:
        raise FileFormatError(f"{origin}: holds binary data (a NUL byte in its first 4 KiB), not {kind} text")


def read_file(path: Path, fmt: FileFormat, origin: str, stream: str) -> tuple[pa.Table, list[Rejected]]:
    """Parse the local file ``path`` (``origin`` names it in messages). Returns the table and
    the rows set aside (wrong column count, invalid NDJSON line, a record that breaks the
    file's own types). Raises :class:`FileFormatError` when the file cannot be parsed."""
    rejected: list[Rejected] = []
    _sniff(path, fmt.type, origin, fmt.csv.encoding if fmt.type == "csv" else "utf-8")
    try:
        if fmt.type in ("csv", "parquet"):
            table = _csv(path, fmt.csv, origin, rejected) if fmt.type == "csv" else pq.read_table(path)
            _ = table.column_names  # names and text must be valid UTF-8: a binary file passes the CSV parser
            table.validate(full=True)
            return table, rejected
        if fmt.type == "json":
            records = select_records(json.loads(path.read_text(encoding="utf-8")), fmt.records)
        elif fmt.type == "ndjson":
            records = _ndjson(path, origin, rejected)
        elif fmt.type == "xml":
            records = _xml(path, fmt.record_path or "/*/*")
        else:
            records = _excel(path, fmt.sheet)
        return _json_records(records, origin, rejected, stream), rejected
    except FileFormatError:
        raise
    except Exception as exc:  # every parser has its own error types; all mean "not this format"
        raise FileFormatError(f"{origin}: cannot be parsed as {fmt.type}: {type(exc).__name__}: {exc}") from None
