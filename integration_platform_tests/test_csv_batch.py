"""Many small CSV files parsed together (``csv_batch.read_files``) give each file exactly what it
gives parsed alone (``read_file``): the same schema, values, rows set aside and errors.

Checked on all 1,781 real daily drops, on hand-made files that try to mislead the join, and on
random groups drawn from values that sit on the edges of pyarrow's type inference.
"""

import gzip
import random
from pathlib import Path

import pyarrow as pa
import pytest

from integration_platform.sources.files import csv_batch
from integration_platform.sources.files.csv_batch import read_files
from integration_platform.sources.files.formats import CsvOptions, FileFormat, FileFormatError, read_file
from integration_platform_tests.services import shared_file

pytestmark = pytest.mark.fast

CSV = FileFormat()


def _alone(path: Path, fmt: FileFormat) -> tuple[pa.Table, list[object]] | str:
    try:
        table, rejected = read_file(path, fmt, path.name, "s")
    except FileFormatError as exc:
        return str(exc)
    return table, [(r.origin, r.reason, r.record) for r in rejected]


def _together(paths: list[Path], fmt: FileFormat) -> list[tuple[pa.Table, list[object]] | str]:
    out: list[tuple[pa.Table, list[object]] | str] = []
    for result in read_files([(p, p.name) for p in paths], fmt, "s"):
        if isinstance(result, Exception):
            out.append(str(result))
        else:
            table, rejected = result
            out.append((table, [(r.origin, r.reason, r.record) for r in rejected]))
    return out


def _assert_same(paths: list[Path], fmt: FileFormat = CSV) -> None:
    alone = [_alone(p, fmt) for p in paths]
    for path, expected, got in zip(paths, alone, _together(paths, fmt), strict=True):
        if isinstance(expected, str) or isinstance(got, str):
            assert got == expected, path.read_bytes()[:300]
            continue
        assert got[0].schema == expected[0].schema, (path.read_bytes()[:300], got[0].schema, expected[0].schema)
        assert _values(got[0]) == _values(expected[0]), path.read_bytes()[:300]
        assert got[1] == expected[1]


def _values(table: pa.Table) -> list[list[object]]:
    """The table's values by column, NaN as "NaN" (NaN equals nothing, not even NaN)."""
    return [[v if v == v else "NaN" for v in column.to_pylist()] for column in table.columns]


class _Alone:
    """Counts the files ``read_files`` hands to ``read_file`` (parsed alone, not in a group)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0

        def counted(*args: object, **kwargs: object) -> object:
            self.count += 1
            return read_file(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(csv_batch, "read_file", counted)


def test_all_daily_drops_parse_together_as_they_parse_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = shared_file("dpc-covid19-ita-regioni-daily", "dati-regioni")
    paths = sorted(folder.glob("dpc-covid19-ita-regioni-*.csv"))
    assert len(paths) == 1781
    alone = _Alone(monkeypatch)
    for start in range(0, len(paths), 16):  # as the read-ahead hands them over
        _assert_same(paths[start : start + 16])
    # the point of the module: on these drops (codes such as "01", notes empty in most files, 24
    # then 30 columns) no file needs a parse of its own
    assert alone.count == 0


def _files(tmp_path: Path, contents: list[bytes | str]) -> list[Path]:
    paths = []
    for i, content in enumerate(contents):
        path = tmp_path / f"f{i:03d}.csv"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        paths.append(path)
    return paths


H = "a,b,c\n"

CASES: dict[str, list[bytes | str]] = {
    "int, double, text, empty and code columns per file": [
        H + "1,x,08\n2,y,09\n",
        H + "1.5,x,8\n,y,9\n",
        H + "abc,,10\n",
        H + ",,\n,,7\n",  # a row of the file itself empty in every column: the join cannot be told apart
        H + "3,4,5\n",
    ],
    "doubles that are integers alone": [H + "1,2.5,3\n", H + "4,5,6\n", H + "-7,0.1,1e3\n", H + "+5,1,2\n"],
    "integers beyond int64 and 16-digit codes": [
        H + "12345678901234567890,1,2\n",
        H + "1234567890123456,1.5,2\n",
        H + "123456789012345678,1,2\n",
        H + "1,2,3\n",
    ],
    "dates, times and timestamps": [
        H + "2021-01-01,12:00:00,2021-01-01T17:00:00\n",
        H + "2021-01-02T00:00:00,12:30:00,2021-01-02 17:00:00\n",
        H + "2021-01-03T05:00:00,x,2021-01-03T17:00:00Z\n",
    ],
    "booleans, NaN and infinities": [H + "true,nan,inf\n", H + "1,2,3\n", H + "False,-inf,Infinity\n", H + "0,1.0,x\n"],
    "quoted values with delimiters, newlines and quotes": [
        H + '"x, y","multi\nline",1\n',
        H + '"say ""hi""",2,"3"\n',
        H + "plain,3,4\n",
    ],
    "a quote inside a field, and a file ending inside a quoted value": [
        H + 'x"y,1,2\n',
        H + 'a"b,"c\n',
        H + "d,1,2\nnext,3,4\n",
        H + '",",1,2\n',
    ],
    "rows with the wrong column count are named by file and line": [
        H + "1,2,3\n4,5\n6,7,8\n",
        H + "1,2,3,4\n9,9,9\n",
        H + "1,2,3\n",
    ],
    "cut files, blank lines, CRLF, a byte-order mark, header only": [
        H + "1,2,3\n4,5",
        H + "1,2,3\n\n\n4,5,6\n\n",
        "a,b,c\r\n1,2,3\r\n4,5,6\r\n",
        "\ufeffa,b,c\n1,2,3\n",
        "\ufeffa,b,c\n4,5,6\n",
        H,
        H + "7,8,9\n",
    ],
    "other headers, blank names, one column, not CSV at all": [
        "a,,c\n1,2,3\n",
        "a,,c\n4,5,6\n",
        "x,y\n1,2\n",
        "only\n1\n\n2\n",
        "only\n3\n",
        "<html><body>502 Bad Gateway</body></html>\n",
        "",
        b"a,b,c\n1,\x00,3\n",
        b"a,b,c\n1,\xff,3\n",
        H + "1,2,3\n",
    ],
    "values with spaces and signs": [H + " 5,+1,-0\n", H + "5 ,1,0\n", H + "-,+,.\n"],
    # found by a hostile probe of the first version:
    "an empty cell is no text": ["a,b\n1,x\n", "a,b\n1,\n2,5\n", "a,b\n2,\n3,2021-01-01\n"],
    "hexadecimal integers": ["a,b\n1,x\n", "a,b\n1,0x10\n", "a,b\n2,0XFFFFFFFFFFFFFFFF\n", "a,b\n3,-0x10\n"],
    "tabs and spaces that pyarrow trims": [
        "a,b\n1,x\n",
        "a,b\n1,\t5\n",
        "a,b\n1,5\t\n",
        "a,b\n1,\t2021-01-01\n",
        "a,b\n1,12:00\t\n",
        "a,b\n1, nan\n",
        "a,b\n1,INFINITY\t\n",
        "a,b\n1, \n2,\t \n",
        "a,b\n1, \n2,5\n",
    ],
    "NaN with a payload": ["a,b\n1,x\n", "a,b\n1,nan(x)\n", "a,b\n1,-NaN(1_a)\n", "a,b\n1,nan(a b)\n"],
    "the same name twice": ["a,a\nx,y\n", "a,a\nz,w\n", "a,a\n1,x\n", "a,a\n2,y\n"],
    "a header that is not UTF-8": [b"a,\xff\n1,x\n", b"a,\xff\n1,y\n"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_files_that_try_to_mislead_the_join_give_what_they_give_alone(tmp_path: Path, name: str) -> None:
    _assert_same(_files(tmp_path, CASES[name]))


#: Cells on the edges of pyarrow's type inference (quoted ones carry their quotes).
CELLS = [
    "", "0", "08", "-3", "+5", "42", "12345678901234567890", "1234567890123456", "1.5", "1.50", "1e3",
    "nan", "inf", "-inf", "true", "False", "TRUE", "2021-01-01", "2021-01-01T00:00:00",
    "2021-01-01T17:00:00", "2021-01-01 17:00:00", "2021-01-01T17:00:00Z", "2021-01-01T17:00:00.5", "12:00:00",
    "12:00", "abc", "ITA", "T", "e", " 5", '"x, y"', '"multi\nline"', '"say ""hi"""', '""',
    "0x10", " nan", "\t5", "nan(x)", " ", "\t2021-01-01",
]  # fmt: skip


def test_random_groups_give_what_each_file_gives_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261205)
    alone = _Alone(monkeypatch)
    compared = 0
    for group in range(120):
        columns = rng.choice([2, 3, 4])
        pools = [rng.sample(CELLS, rng.randint(1, 4)) for _ in range(columns)]  # each column's own values
        header = ",".join(f"c{i}" for i in range(columns)) + "\n"
        contents: list[bytes | str] = []
        for _ in range(rng.randint(2, 8)):
            rows = [",".join(rng.choice(pool) for pool in pools) for _ in range(rng.randint(0, 4))]
            contents.append(header + "".join(row + "\n" for row in rows))
        folder = tmp_path / str(group)
        folder.mkdir()
        paths = _files(folder, contents)
        _assert_same(paths)
        compared += len(paths)
    # the values are chosen to sit on the edges, so many files fall back to a parse of their own:
    # what matters is that both ways were compared
    together = compared - alone.count
    assert 0 < together < compared, f"{together} of {compared} random files were parsed in a group"


@pytest.mark.parametrize(
    "options",
    [
        CsvOptions(skip_rows=1),
        CsvOptions(header=False),
        CsvOptions(header=False, column_names=["x", "y", "z"]),
        CsvOptions(null_values=["NA"]),
        CsvOptions(encoding="latin-1"),
    ],
    ids=["skip_rows", "no header", "column_names", "null_values without empty", "latin-1"],
)
def test_options_the_join_does_not_cover_parse_each_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: CsvOptions
) -> None:
    # two columns before the header: joined, the first file's would become the group's header
    paths = _files(tmp_path, ["gen,2021\n" + H + "1,2,3\n", "gen,2022\n" + H + "4,5,6\n", "gen,2023\n" + H + "7,8,9\n"])
    fmt = FileFormat(csv=options)
    alone = _Alone(monkeypatch)
    _assert_same(paths, fmt)
    assert alone.count == len(paths)


def test_a_compressed_file_and_one_that_cannot_be_read_answer_for_themselves(tmp_path: Path) -> None:
    paths = _files(tmp_path, [H + "1,2,3\n", H + "4,5,6\n"])
    packed = tmp_path / "f002.csv.gz"
    packed.write_bytes(gzip.compress((H + "7,8,9\n").encode()))
    gone = tmp_path / "gone.csv"
    results = read_files([(p, p.name) for p in [*paths, packed, gone]], CSV, "s")
    _assert_same([*paths, packed])
    assert isinstance(results[3], FileNotFoundError)  # its own error, in its own place
    assert [r[0].num_rows for r in results[:2] if not isinstance(r, Exception)] == [1, 1]
    # pyarrow decompresses by the name's suffix: such a file is never joined as raw bytes
    assert csv_batch._compressed(packed) and csv_batch._compressed(tmp_path / "x.csv.zst")
    assert not csv_batch._compressed(paths[0])


def test_an_option_added_later_turns_grouping_off_until_the_join_knows_it() -> None:
    class Later(CsvOptions):
        escape_char: str = ""

    assert csv_batch._batchable(Later()) and not csv_batch._batchable(Later(escape_char="\\"))


def test_the_quote_check_jumping_between_quotes_answers_as_removing_every_quoted_field() -> None:
    fields = csv_batch._quoted_fields(CsvOptions())
    rng = random.Random(20261206)
    answers = set()
    for _ in range(20000):
        data = bytes(rng.choice(b'ab,"\n\r') for _ in range(rng.randint(0, 12)))
        expected = b'"' not in fields.sub(b"", data)
        assert csv_batch._quotes_well_formed(data, b'"', fields) == expected, data
        answers.add(expected)
    assert answers == {True, False}


def test_column_names_rename_a_header_skipped_with_skip_rows() -> None:
    """``column_names`` with ``skip_rows: 1`` renames a file's header (the header line is skipped): kept when
    the names without ``header: false`` were refused; alone, they still are."""
    assert CsvOptions(skip_rows=1, column_names=["x", "y"]).column_names == ["x", "y"]
    with pytest.raises(ValueError, match="set header: false, or skip_rows: 1"):
        CsvOptions(column_names=["x", "y"])
