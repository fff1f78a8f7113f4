"""What a dropped file holds is checked before it lands (real files, no server): codes keep their
text ("066" stays "066"), HTML error pages, binary and empty files are bad files, a cut last line
fails the file, a header that is no column name never reaches the warehouse, and a rejected row is
named by its own line."""

from pathlib import Path

import pyarrow as pa
import pytest

from integration_platform.sources.files.formats import FileFormat, FileFormatError, read_file

pytestmark = pytest.mark.fast


def _read(tmp_path: Path, text: str) -> tuple[pa.Table, list[str]]:
    path = tmp_path / "drop.csv"
    path.write_text(text, encoding="utf-8")
    table, rejected = read_file(path, FileFormat(), "drop.csv", "s")
    return table, [r.origin for r in rejected]


def test_leading_zeros_and_long_numbers_stay_text(tmp_path: Path) -> None:
    table, rejected = _read(
        tmp_path,
        "region,count,card,id,price,at,note\n"
        '01,5,12345678901234567890123,1234567890123456789,1.50,09:30,"a, b"\n'
        "13,6,12,2,2.00,10:00,c\n"
        "07,7\n"  # wrong column count: set aside once
        "-05,8,3,3,0.25,11:00,d\n",
    )
    assert table.schema.field("region").type == pa.string()
    assert table.column("region").to_pylist() == ["01", "13", "-05"]
    assert table.schema.field("card").type == pa.string()  # 23 digits: a double would round it
    assert table.column("card").to_pylist()[0] == "12345678901234567890123"
    assert table.schema.field("id").type == pa.int64()  # 19 digits: int64 holds them exactly
    assert table.schema.field("count").type == pa.int64()
    assert table.schema.field("price").type == pa.float64()  # "0.25" is a number, not a code
    assert rejected == ["drop.csv line 4"]


def test_a_code_in_the_last_block_of_a_large_file_keeps_only_its_column_as_text(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i + 1},{i}.5\n" for i in range(1, 400_000))  # ~8 MB: several 4 MB blocks
    table, _ = _read(tmp_path, "a,b,c\n" + rows + "7,08,1.5\n")
    assert table.num_rows == 400_000
    assert table.schema.field("a").type == pa.int64()
    assert table.schema.field("b").type == pa.string()
    assert table.column("b").to_pylist()[-2:] == ["400000", "08"]
    assert table.schema.field("c").type == pa.float64()


def test_other_encodings_and_blank_header_cells(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("region,count\n066,5\n13,6\n", encoding="utf-16")
    table, _ = read_file(path, FileFormat(csv={"encoding": "utf-16"}), "wide.csv", "s")  # type: ignore[arg-type]
    assert table.column("region").to_pylist() == ["066", "13"]
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b,c\n1,2,caf\xe9\n3,caf\xe9".encode("latin-1"))
    with pytest.raises(FileFormatError, match="the last line is cut"):
        read_file(path, FileFormat(csv={"encoding": "latin-1"}), "latin.csv", "s")  # type: ignore[arg-type]
    table, _ = _read(tmp_path, ",name\n0,a\n1,b\n")  # what pandas' to_csv writes for its index
    assert table.column_names == ["column_0", "name"]


def test_a_file_not_in_its_encoding_fails_naming_line_and_column_instead_of_landing_bytes(tmp_path: Path) -> None:
    # pyarrow read the Latin-1 column as binary: the stream's column became binary for good, and every
    # later day's UTF-8 text in it landed as bytes
    assert "drop.csv line 3: column 'city' holds bytes that are not utf-8 text" in _fails(
        tmp_path, "id,city\n1,Berlin\n2,K\xf6ln\n".encode("latin-1")
    )
    path = tmp_path / "latin.csv"
    path.write_bytes("id,city\n2,K\xf6ln\n".encode("latin-1"))
    table, _ = read_file(path, FileFormat(csv={"encoding": "latin-1"}), "latin.csv", "s")  # type: ignore[arg-type]
    assert table.column("city").to_pylist() == ["K\xf6ln"]


def test_a_file_without_codes_is_read_once_and_keeps_its_numbers(tmp_path: Path) -> None:
    table, _ = _read(tmp_path, "region,count\n1,5\n13,6\n")
    assert table.schema.field("region").type == pa.int64()


def test_the_file_precheck_follows_the_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "drop.csv"
    path.write_text("region;count\n01;5\n13;6\n", encoding="utf-8")
    table, _ = read_file(path, FileFormat(csv={"delimiter": ";"}), "drop.csv", "s")  # type: ignore[arg-type]
    assert table.column("region").to_pylist() == ["01", "13"]


def _fails(tmp_path: Path, content: bytes, kind: str = "csv") -> str:
    path = tmp_path / f"drop.{kind}"
    path.write_bytes(content)
    with pytest.raises(FileFormatError) as failure:
        read_file(path, FileFormat(type=kind), f"drop.{kind}", "s")  # type: ignore[arg-type]
    return str(failure.value)


def test_html_binary_and_empty_drops_are_bad_files(tmp_path: Path) -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n"
    assert "drop.csv: is an HTML page, not csv (it starts '<!DOCTYPE html>')" in _fails(tmp_path, page)
    assert "is an HTML page, not json" in _fails(tmp_path, b"\xef\xbb\xbf  <html><body>oops", "json")
    assert "holds binary data" in _fails(tmp_path, b"a,b\n\x00\x01\x02,3\n")
    assert "the file is empty" in _fails(tmp_path, b"")
    assert "the file is empty" in _fails(tmp_path, b"\n\n", "ndjson")
    assert "not column names: '<title>502</title>'" in _fails(tmp_path, b"a,<title>502</title>\n1,2\n")


def test_a_cut_last_line_fails_the_file_and_a_missing_final_newline_does_not(tmp_path: Path) -> None:
    whole = "region,count,name\n01,5,a\n02,6,b\n"
    assert "drop.csv line 4: the last line is cut (expected 3 columns, got 2" in _fails(
        tmp_path, (whole + "03,7").encode()
    )
    table, rejected = _read(tmp_path, whole + "03,7,c")  # no final newline, but whole
    assert table.num_rows == 3 and rejected == []
    path = tmp_path / "cut.csv"
    path.write_text(whole + "03,7")
    options = FileFormat(csv={"on_cut_last_line": "quarantine"})  # type: ignore[arg-type]
    table, set_aside = read_file(path, options, "cut.csv", "s")
    assert table.num_rows == 2 and [r.origin for r in set_aside] == ["cut.csv line 4"]


def test_a_file_whose_only_line_has_no_line_end_lands_instead_of_failing(tmp_path: Path) -> None:
    # an empty day's export written as "\n".join([header, *rows]); pyarrow raised "Empty CSV file or block"
    table, rejected = _read(tmp_path, "region,count")
    assert table.column_names == ["region", "count"] and table.num_rows == 0 and rejected == []
    path = tmp_path / "one.csv"
    path.write_text("title line\nregion,count")
    table, _ = read_file(path, FileFormat(csv={"skip_rows": 1}), "one.csv", "s")  # type: ignore[arg-type]
    assert table.column_names == ["region", "count"] and table.num_rows == 0
    path.write_text("066,5")  # one row, no header: its code stays text
    table, _ = read_file(path, FileFormat(csv={"header": False}), "one.csv", "s")  # type: ignore[arg-type]
    assert table.to_pylist() == [{"f0": "066", "f1": 5}]


def test_a_file_cut_inside_a_quoted_value_fails_though_its_column_count_is_right(tmp_path: Path) -> None:
    # a quote-all export cut mid-value: pyarrow read "Mila" (and "line one\nline") as whole values
    whole = 'region,count,note\n"01","5","a ""b"""\n'
    for cut in (whole + '"02","6","Mila', whole + '"02","6","line one\nline', whole + '"02","6","a ""b""'):
        assert 'the last line is cut (a quoted value without its closing ", no line end)' in _fails(
            tmp_path, cut.encode()
        )
    # a quote inside an unquoted field (5'11" as a height) is a plain character to pyarrow: beside it a cut
    # value made the file's count of quotes even, and a first check by that count let the cut value land
    for cut in ('region,count,note\n"01",5,5\'11"\n"02","6","Mila', 'region,count,note\n01,5,ab"c\n02,6,"Deliver to'):
        assert 'the last line is cut (a quoted value without its closing ", no line end)' in _fails(
            tmp_path, cut.encode()
        )
    for whole_value in ('"02","6","Milano"', '"02",6,x"y', '"02","6","a ""b"""'):  # closed: lands
        table, rejected = _read(tmp_path, whole + whole_value)
        assert table.num_rows == 2 and rejected == []
    path = tmp_path / "cut.csv"
    path.write_text(whole + '"02","6","line one\nline')
    options = FileFormat(csv={"on_cut_last_line": "quarantine"})  # type: ignore[arg-type]
    table, set_aside = read_file(path, options, "cut.csv", "s")
    assert table.num_rows == 1 and [r.origin for r in set_aside] == ["cut.csv line 4"]


def test_a_rejected_row_is_named_by_its_own_line_not_an_earlier_prefix(tmp_path: Path) -> None:
    # line 2 starts with the text of the bad line 4; a prefix search named line 2
    _, rejected = _read(tmp_path, 'a,b,c\n1,2,3\n"x\ny",5,6\n1,2\n1,2,3\n')
    assert rejected == ["drop.csv line 5"]


def test_an_xml_file_in_utf16_with_its_byte_order_mark_is_not_binary(tmp_path: Path) -> None:
    path = tmp_path / "rows.xml"
    path.write_text('<?xml version="1.0" encoding="UTF-16"?><rows><row><a>1</a></row></rows>', encoding="utf-16")
    table, _ = read_file(path, FileFormat(type="xml", record_path="//row"), "rows.xml", "s")
    assert table.to_pylist() == [{"a": "1"}]
    assert "holds binary data" in _fails(tmp_path, b"\xff\xfe\x00garbage\x00\n")  # a CSV read as UTF-8
