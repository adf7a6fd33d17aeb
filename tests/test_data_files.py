"""Data files: dated, sourced, validated with row numbers."""
import pytest

from helpers.data import load_rows
from helpers.errors import DataError


def write(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


def test_valid_rows_convert_numbers_and_dates(tmp_path):
    rows = load_rows(write(tmp_path, "# comment\nname,price,source,date\na,1.5,somewhere,2026-01-02\n"), numeric=["price"])
    assert rows[0]["price"] == 1.5 and rows[0]["date"].year == 2026


def test_row_without_date_names_the_row_and_field(tmp_path):
    path = write(tmp_path, "name,price,source,date\na,1,s,2026-01-01\nb,2,s,\n")
    with pytest.raises(DataError, match=r"data row 2: field 'date' is empty"):
        load_rows(path, numeric=["price"])


def test_non_numeric_value_names_the_row_and_field(tmp_path):
    path = write(tmp_path, "name,price,source,date\na,$3,s,2026-01-01\n")
    with pytest.raises(DataError, match=r"data row 1: field 'price' is '\$3', not a number"):
        load_rows(path, numeric=["price"])


def test_missing_column_is_named(tmp_path):
    with pytest.raises(DataError, match="missing column"):
        load_rows(write(tmp_path, "name,price\na,1\n"), numeric=["price"])


def test_bad_date_format(tmp_path):
    with pytest.raises(DataError, match="not an ISO date"):
        load_rows(write(tmp_path, "name,source,date\na,s,22/11/2026\n"))


@pytest.mark.parametrize("name", ["gpu_specs.csv", "models.csv", "planner_rates.csv"])
def test_shipped_sourced_files_load(name):
    rows = load_rows(name)
    assert rows and all(row["source"].strip() and row["date"] for row in rows)


def test_results_rows_replace_the_same_run_and_keep_the_others(tmp_path):
    import csv

    from helpers.data import write_results

    path = tmp_path / "results.csv"
    write_results(path, [{"hardware": "H100", "model": "m", "tokens_per_s": 1}])
    write_results(path, [{"hardware": "T4", "model": "m", "tokens_per_s": 2, "extra": "x"}])
    write_results(path, [{"hardware": "H100", "model": "m", "tokens_per_s": 3}])
    rows = list(csv.DictReader(open(path)))
    assert [(r["hardware"], r["tokens_per_s"]) for r in rows] == [("T4", "2"), ("H100", "3")]
    assert rows[0]["extra"] == "x" and rows[1]["extra"] == ""
