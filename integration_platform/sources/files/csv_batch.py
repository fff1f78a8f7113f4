"""Many small CSV files parsed in one pyarrow call, each file's table exactly as it alone gives.

Why our own code: a pyarrow ``read_csv`` call has a fixed cost of about 0.4 ms, and a file with
numeric columns takes two (:func:`~integration_platform.sources.files.formats.read_file` reads
those columns again as text to keep codes such as "08"). On 5 KB daily drops that fixed cost is
most of the parse, and the parse was the critical path of a backfill's read-ahead. No library
parses a group of files while keeping each file's own inferred types.

How: the files of a group share their header line byte for byte. Their rows are joined into one
CSV text, a row of empty fields (NULL in every column) between two files, and parsed twice (typed,
then the numeric columns as text) for the whole group. Each file's rows are then sliced back, and
each column gets the type that pyarrow's inference would give the file alone, which follows from
the group's type and the file's own values:

- no value in the file: the null type;
- the group's ``int64``: ``int64``;
- the group's ``double``: ``int64`` when every value of the file is written as an integer of at
  most 18 digits, ``double`` when one holds ``.``, ``e``, ``n`` or ``i`` (no integer does);
- the group's ``string``: ``string`` when one value could not be read as any other type (holds a
  character no number, boolean, date, time or timestamp is written with);
- the group's ``timestamp[s]``: itself when one value is not at midnight (else it may be a date);

and then the file's own codes are kept as text, as :func:`read_file` does. A file whose type does
not follow from these rules, and every file of a group whose parse sets a row aside or whose types
fall outside them, is parsed alone: what the caller gets is always what ``read_file`` returns.

Only files that cannot mislead the join take part: UTF-8, not compressed, a header line without
quotes naming no column twice, at most :data:`BATCH_FILE_BYTES`, ending with a line end, every
quote character part of a quoted field
that starts and ends at field boundaries (so no file can end inside a quoted value and swallow
the next file's rows), and a group whose parse yields exactly one all-NULL row per join.
"""

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from integration_platform.core.names import implausible_column_names
from integration_platform.core.records import Rejected
from integration_platform.sources.files.formats import (
    _CODE,
    _LEADING_ZERO,
    CsvOptions,
    FileFormat,
    FileFormatError,
    read_file,
    sniff_head,
)

#: A file larger than this is parsed alone: the fixed cost of a call no longer matters.
BATCH_FILE_BYTES = 256 << 10
#: The bytes of one group's joined text; below the reader's block (4 MiB), so pyarrow infers each
#: column's type from all of the group's rows, as it does from all of a small file's rows.
BATCH_BYTES = 2 << 20

#: Values of a ``double`` column that pyarrow's reader also reads as ``int64`` (and those that it
#: surely does not: no integer holds these characters).
_SURE_INT = r"^-?[0-9]{1,18}$"
_NOT_INT = r"[.eEnNiI]"
#: A text value that no other type's reader accepts: it holds a character outside those of numbers,
#: dates, times and timestamps and the spaces and tabs pyarrow trims around them, or only spaces and
#: tabs, and is not a boolean, NaN ("nan(x)" too), infinity or a hexadecimal integer ("0x10").
_MAY_BE_OTHER = r"^[ \t]*[0-9+\-.:,TtZzeE][0-9+\-.:,TtZzeE \t]*$"
_OTHER_WORDS = r"(?i)^[ \t]*[+-]?(true|false|nan|nan\(.*\)|inf|infinity|0x[0-9a-f]+)[ \t]*$"

#: At most this many files are parsed in one group (a group's text is also bounded by :data:`BATCH_BYTES`).
GROUP_FILES = 256

#: A file's rows and the rows set aside, or what parsing it raised (a :class:`FileFormatError`, or an
#: ``OSError`` reading the local copy), to be raised in that file's turn, not another's.
FileResult = tuple[pa.Table, list[Rejected]] | Exception


def read_files(files: Sequence[tuple[Path, str]], fmt: FileFormat, stream: str) -> list[FileResult]:
    """Parse the local files ``files`` (``(path, origin)`` pairs, ``origin`` naming each in
    messages); element i of the result is what ``read_file(files[i][0], fmt, files[i][1], stream)``
    returns, or the exception it raises (:class:`FileFormatError`, ``OSError``). Small CSV files with
    the same header are parsed together (module docstring); any other file alone."""
    results: list[FileResult | None] = [None] * len(files)
    if _batchable(fmt.csv) and fmt.type == "csv":
        groups: dict[bytes, list[tuple[int, bytes]]] = {}
        for index, (path, origin) in enumerate(files):
            data = _joinable(path, origin, fmt.csv)
            if data is not None:
                header, _, rows = data.partition(b"\n")
                groups.setdefault(header, []).append((index, rows))
        for header, members in groups.items():
            for start in range(0, len(members), GROUP_FILES):
                _read_group(header, members[start : start + GROUP_FILES], fmt.csv, results)
    out: list[FileResult] = []
    for (path, origin), result in zip(files, results, strict=True):
        if result is None:
            try:
                result = read_file(path, fmt, origin, stream)
            except (FileFormatError, OSError) as exc:
                result = exc
        out.append(result)
    return out


#: The CSV options whose meaning the join keeps; any other option set away from its default (one
#: added later included) turns grouping off.
_JOIN_KEEPS = frozenset(
    {"delimiter", "quote_char", "encoding", "header", "column_names", "null_values", "skip_rows", "on_cut_last_line"}
)


def _batchable(options: CsvOptions) -> bool:
    defaults = type(options)()
    others = [name for name in type(options).model_fields if name not in _JOIN_KEEPS]
    return (
        all(getattr(options, name) == getattr(defaults, name) for name in others)
        and options.header
        and not options.column_names
        and options.skip_rows == 0
        and "" in options.null_values
        and options.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    )


def _joinable(path: Path, origin: str, options: CsvOptions) -> bytes | None:
    """The file's bytes when it may be joined with others (module docstring), else None (also when
    it cannot be read: parsed alone, it raises that in its own turn)."""
    if path.suffix.lower() not in ("", ".csv", ".txt", ".tsv") and _compressed(path):
        return None  # pyarrow decompresses by the name's suffix (".gz", ".zst", ...): alone, it still does
    try:
        if path.stat().st_size > BATCH_FILE_BYTES:  # not read here: a large file is parsed alone, in blocks
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) > BATCH_FILE_BYTES or not data.endswith(b"\n"):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None  # a column pyarrow would read as binary: parsed alone, as any file would be
    try:
        sniff_head(data[:4096], "csv", origin, "utf-8")
    except FileFormatError:
        return None  # parsed alone, which raises it
    quote = options.quote_char.encode()
    header = data[: data.index(b"\n")]
    if quote in header or b"\r" in header.rstrip(b"\r"):
        return None
    names = header.decode("utf-8").split(options.delimiter)
    if len(set(names)) != len(names):
        return None  # the same name twice: no column can be told from its twin by name
    if not _quotes_well_formed(data, quote, _quoted_fields(options)):
        return None
    return data


def _quotes_well_formed(data: bytes, quote: bytes, fields: re.Pattern[bytes]) -> bool:
    """Whether every ``quote`` in ``data`` is part of a quoted field (``fields``), taken from the left.
    Jumps from quote to quote: the pattern starts with a look-behind, so a search would try it at
    every byte (0.24 s of 1.0 s for the 1,781 daily drops)."""
    at = data.find(quote)
    while at != -1:
        match = fields.match(data, at)
        if match is None:
            return False
        at = data.find(quote, match.end())
    return True


def _compressed(path: Path) -> bool:
    """Whether pyarrow's reader would decompress ``path``, going by its name."""
    try:
        return pa.Codec.detect(str(path)) is not None
    except (TypeError, ValueError):  # no codec for this suffix
        return False


def _quoted_fields(options: CsvOptions) -> re.Pattern[bytes]:
    q, d = re.escape(options.quote_char.encode()), re.escape(options.delimiter.encode())
    return re.compile(
        rb"(?<![^" + d + rb"\n])" + q + rb"(?:[^" + q + rb"]|" + q + q + rb")*" + q + rb"(?=" + d + rb"|\r?\n|\Z)"
    )


def _read_group(
    header: bytes,
    members: list[tuple[int, bytes]],
    options: CsvOptions,
    results: list[FileResult | None],
) -> None:
    """Parse ``members`` (a file's index in ``results``, its bytes after the header line) together and put
    each one's table in ``results`` where its type follows from the group's; leave the others None
    (also on any error: each file alone then gives what it gives)."""
    try:
        _read_together(header, members, options, results)
    except Exception:
        for index, _ in members:
            results[index] = None


def _read_together(
    header: bytes, members: list[tuple[int, bytes]], options: CsvOptions, results: list[FileResult | None]
) -> None:
    if len(members) < 2:
        return
    columns = header.count(options.delimiter.encode()) + 1
    if columns < 2:  # a row of empty fields would be an empty line, which the reader skips
        return
    join = options.delimiter.encode() * (columns - 1) + b"\n"
    text = header + b"\n" + join.join(rows for _, rows in members)
    if len(text) > BATCH_BYTES:
        half = len(members) // 2
        _read_together(header, members[:half], options, results)
        _read_together(header, members[half:], options, results)
        return
    set_aside: list[object] = []

    def invalid(row: object) -> str:
        set_aside.append(row)
        return "skip"

    read = pv.ReadOptions(block_size=4 << 20)
    parse = pv.ParseOptions(
        delimiter=options.delimiter, quote_char=options.quote_char, newlines_in_values=True, invalid_row_handler=invalid
    )
    convert = pv.ConvertOptions(null_values=options.null_values, strings_can_be_null=True)
    table = pv.read_csv(pa.BufferReader(text), read_options=read, parse_options=parse, convert_options=convert)
    if set_aside or table.num_columns != columns:
        return  # a row set aside is named by its own file and line: parsed alone
    kinds = [field.type for field in table.schema]
    if not all(_handled(kind) for kind in kinds):
        return
    valid = (  # (columns x rows): the value is not NULL
        np.stack([column.is_valid().to_numpy(zero_copy_only=False) for column in table.columns])
        if table.num_rows
        else np.zeros((table.num_columns, 0), bool)
    )
    joins = np.flatnonzero(~valid.any(axis=0))
    if len(joins) != len(members) - 1:
        return  # a row of the files themselves is empty in every column: cannot tell where files end
    starts = np.concatenate(([0], joins + 1))
    ends = np.concatenate((joins, [table.num_rows]))
    numeric = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    texts = _texts(text, numeric, options) if numeric else None
    if texts is not None and texts.num_rows != table.num_rows:
        return
    names = [name or f"column_{i}" for i, name in enumerate(table.column_names)]
    if implausible_column_names(names):
        return  # each file alone raises it
    counts = _Counts(table, valid, texts, numeric, starts, ends)
    actions = _actions(table.schema, counts)
    for file, (index, _) in enumerate(members):
        one = _file_table(table, texts, counts, actions, file)
        if one is not None:
            results[index] = (one.rename_columns(names), [])


def _handled(kind: pa.DataType) -> bool:
    return (
        pa.types.is_null(kind)
        or kind == pa.int64()
        or kind == pa.float64()
        or kind == pa.string()
        or (pa.types.is_timestamp(kind) and kind.unit == "s")
    )


def _texts(text: bytes, numeric: list[str], options: CsvOptions) -> pa.Table:
    parse = pv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote_char,
        newlines_in_values=True,
        invalid_row_handler=lambda _: "skip",
    )
    convert = pv.ConvertOptions(
        null_values=options.null_values,
        strings_can_be_null=True,
        include_columns=numeric,
        column_types={name: pa.string() for name in numeric},
    )
    return pv.read_csv(
        pa.BufferReader(text),
        read_options=pv.ReadOptions(block_size=4 << 20),
        parse_options=parse,
        convert_options=convert,
    )


class _Counts:
    """Per column and per file of a group, how many values the file holds of each kind the module
    docstring's rules look at: ``of[kind]`` is a (columns x files) array. Each kind is matched once
    over all the group's columns, as one array, not once per column and file."""

    def __init__(
        self,
        table: pa.Table,
        valid: np.ndarray,
        texts: pa.Table | None,
        numeric: list[str],
        starts: np.ndarray,
        ends: np.ndarray,
    ) -> None:
        """``valid``: (columns x rows), whether each value of ``table`` is not NULL."""
        self.names = table.column_names
        self.starts, self.ends = starts, ends
        self.of: dict[str, np.ndarray] = {}
        self.of["valid"] = self._per_file(valid)
        strings = [f.name for f in table.schema if f.type == pa.string()]
        may_be_other = self._matching(table, strings, (_MAY_BE_OTHER, _OTHER_WORDS))
        # a NULL is no value at all: not one that only text can be
        valid_strings = valid[[self.names.index(name) for name in strings]]
        self._put("text only", strings, valid_strings & ~(may_be_other[0] | may_be_other[1]))
        stamps = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
        seconds = np.zeros((0, table.num_rows), np.int64)
        if stamps:
            seconds = np.stack(
                [pc.cast(table.column(name), pa.int64()).to_numpy(zero_copy_only=False) for name in stamps]
            )
        self._put("not midnight", stamps, np.nan_to_num(seconds) % 86400 != 0)
        if texts is None:  # no numeric column: every numeric kind is counted nowhere
            numeric = []
        matched = self._matching(
            table if texts is None else texts, numeric, (_SURE_INT, _NOT_INT, _CODE, _LEADING_ZERO)
        )
        for kind, flags in zip(("sure int", "not int", "code", "leading zero"), matched, strict=True):
            self._put(kind, numeric, flags)

    def _matching(self, table: pa.Table, names: list[str], patterns: tuple[str, ...]) -> list[np.ndarray]:
        """For each pattern, a (len(names) x rows) array: the value matches (NULL does not)."""
        if not names:
            return [np.zeros((0, table.num_rows), bool) for _ in patterns]
        values = pa.chunked_array([chunk for name in names for chunk in table.column(name).chunks], pa.string())
        # Each distinct value is matched once: daily drops repeat theirs (region names, codes, dates)
        encoded = pc.dictionary_encode(values).combine_chunks()
        indices = encoded.indices
        return [
            pc.fill_null(pc.take(pc.match_substring_regex(encoded.dictionary, pattern), indices), False)
            .to_numpy(zero_copy_only=False)
            .reshape(len(names), -1)
            for pattern in patterns
        ]

    def _per_file(self, flags: np.ndarray) -> np.ndarray:
        running = np.zeros((flags.shape[0], flags.shape[1] + 1), np.int64)
        np.cumsum(flags, axis=1, out=running[:, 1:])
        return running[:, self.ends] - running[:, self.starts]

    def _put(self, kind: str, names: list[str], flags: np.ndarray) -> None:
        """``of[kind]`` for all columns: the counts of ``names``' ``flags``, 0 for the others."""
        counts = np.zeros((len(self.names), len(self.starts)), np.int64)
        if names:
            counts[[self.names.index(name) for name in names]] = self._per_file(flags)
        self.of[kind] = counts


#: What :func:`_file_table` does with a column of a file (:func:`_actions`).
_KEEP, _NULLS, _ALONE, _TEXT, _AS_INT = range(5)


def _actions(schema: pa.Schema, counts: _Counts) -> np.ndarray:
    """A (columns x files) ``int8`` array: what each file's column becomes so that it is typed as the file
    alone would type it (module docstring): ``_KEEP``, ``_NULLS`` (no value: the null type), ``_TEXT`` (its
    codes, read as text), ``_AS_INT`` (cast to ``int64``), or ``_ALONE`` when the file's type does not
    follow from the group's (it is parsed alone). Decided for all columns and files at once, from ``counts``."""
    of = counts.of
    shape = of["valid"].shape
    kinds = list(schema.types)

    def each(test: list[bool]) -> np.ndarray:  # one flag per column, as a column of the array
        return np.array(test, bool).reshape(-1, 1)

    is_int, is_float = each([k == pa.int64() for k in kinds]), each([k == pa.float64() for k in kinds])
    as_int = is_float & (of["not int"] == 0)
    code = np.where(is_int | as_int, of["leading zero"], of["code"]) > 0
    actions = np.full(shape, _KEEP, np.int8)
    actions[(is_int | is_float) & code] = _TEXT
    actions[as_int & ~code] = _AS_INT
    actions[as_int & (of["sure int"] != of["valid"])] = _ALONE  # "+5", 19 digits: pyarrow might or might not
    actions[each([k == pa.string() for k in kinds]) & (of["text only"] == 0)] = _ALONE
    actions[each([pa.types.is_timestamp(k) for k in kinds]) & (of["not midnight"] == 0)] = _ALONE
    actions[of["valid"] == 0] = _NULLS  # no value in the file: the null type, whatever else holds
    return actions


def _file_table(
    table: pa.Table, texts: pa.Table | None, counts: _Counts, actions: np.ndarray, file: int
) -> pa.Table | None:
    """The rows of the group's ``file``-th file, typed as the file alone would be (``actions``, from
    :func:`_actions`), or None when the file's types do not follow from the group's (it is then parsed alone)."""
    todo = actions[:, file]
    if (todo == _ALONE).any():
        return None
    start, end = int(counts.starts[file]), int(counts.ends[file])
    rows = end - start
    one = table.slice(start, rows)
    changed = np.flatnonzero(todo != _KEEP).tolist()
    if not changed:
        return one
    names, columns = table.column_names, one.columns
    for i in changed:
        if todo[i] == _NULLS:
            columns[i] = pa.chunked_array([pa.nulls(rows)])
            continue
        assert texts is not None
        text = texts.column(names[i]).slice(start, rows)
        columns[i] = text if todo[i] == _TEXT else pc.cast(text, pa.int64())
    return pa.Table.from_arrays(columns, names=names)  # one table, not one per column changed
