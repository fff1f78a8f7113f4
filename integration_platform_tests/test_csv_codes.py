"""Codes in CSV drops keep their text: a leading zero or more digits than a double holds keeps a
column as text (pyarrow alone reads "066" as 66), other numbers stay numbers, and a row set
aside is set aside once although the file is read twice."""

from pathlib import Path

import pyarrow as pa
import pytest

from integration_platform.sources.files.formats import FileFormat, read_file

pytestmark = pytest.mark.fast


def _read(tmp_path: Path, text: str) -> tuple[pa.Table, list[str]]:
    path = tmp_path / "drop.csv"
    path.write_text(text, encoding="utf-8")
    table, rejected = read_file(path, FileFormat(), "drop.csv", "s")
    return table, [r.origin for r in rejected]


def test_leading_zeros_and_long_numbers_stay_text(tmp_path: Path) -> None:
    table, rejected = _read(
        tmp_path,
        "region,count,iban,price,at,note\n"
        '01,5,1234567890123456789,1.50,09:30,"a, b"\n'
        "13,6,12,2.00,10:00,c\n"
        "07,7\n"  # wrong column count: set aside once
        "-05,8,3,0.25,11:00,d\n",
    )
    assert table.schema.field("region").type == pa.string()
    assert table.column("region").to_pylist() == ["01", "13", "-05"]
    assert table.schema.field("iban").type == pa.string()
    assert table.column("iban").to_pylist()[0] == "1234567890123456789"
    assert table.schema.field("count").type == pa.int64()
    assert table.schema.field("price").type == pa.float64()  # "0.25" is a number, not a code
    assert rejected == ["drop.csv line 4"]


def test_a_file_without_codes_is_read_once_and_keeps_its_numbers(tmp_path: Path) -> None:
    table, _ = _read(tmp_path, "region,count\n1,5\n13,6\n")
    assert table.schema.field("region").type == pa.int64()


def test_the_file_precheck_follows_the_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "drop.csv"
    path.write_text("region;count\n01;5\n13;6\n", encoding="utf-8")
    table, _ = read_file(path, FileFormat(csv={"delimiter": ";"}), "drop.csv", "s")  # type: ignore[arg-type]
    assert table.column("region").to_pylist() == ["01", "13"]
