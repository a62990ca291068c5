"""``rnnkit.data.files.series_csv``: wide and long series files, and every malformed case."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.files import DataFileError
from rnnkit.data.files.series_csv import SeriesFormat, load_series

WIDE = "date,north,south\n2020-01,1,10\n2020-02,2,20\n2020-03,3,30\n2020-04,4,40\n"
LONG = "series,time,value,price\na,1,1.5,9\nb,1,7,8\na,2,2.5,9.5\nb,2,8,8\na,3,3.5,10\nb,3,9,7\n"


def write(tmp_path, text, name="series.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path, minimum=1, **options):
    return load_series(path, SeriesFormat(**options), minimum)


def test_wide_file_with_a_date_column(tmp_path):
    loaded = load(write(tmp_path, WIDE))
    assert [series.name for series in loaded.series] == ["north", "south"]
    assert loaded.series[0].values.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert loaded.series[1].values.dtype == torch.float64
    assert loaded.series[1].timestamps == ["2020-01", "2020-02", "2020-03", "2020-04"]
    assert loaded.series[0].covariates.shape == (4, 0)
    assert loaded.report.summary().endswith("2 read")


def test_wide_series_may_start_late_and_end_early_and_share_covariates(tmp_path):
    text = "t,a,b,temp\n1,,5,0.5\n2,1,6,0.6\n3,2,,0.7\n"
    loaded = load(write(tmp_path, text), time_column="t", covariates=("temp",))
    a, b = loaded.series
    assert a.values.tolist() == [1.0, 2.0] and a.timestamps == ["2", "3"]
    assert a.covariates[:, 0].tolist() == [0.6, 0.7]
    assert b.values.tolist() == [5.0, 6.0] and b.covariates[:, 0].tolist() == [0.5, 0.6]


def test_wide_without_timestamps_reads_every_column_as_a_series(tmp_path):
    loaded = load(write(tmp_path, "x,y\n1,2\n3,4\n"))
    assert [series.name for series in loaded.series] == ["x", "y"]
    assert loaded.series[0].timestamps is None
    with pytest.raises(DataFileError, match="column 'date': expected a finite number"):
        load(write(tmp_path, WIDE), time_column="none")  # the dates read as a series


def test_long_file_interleaved_with_a_covariate(tmp_path):
    loaded = load(write(tmp_path, LONG), covariates=("price",))
    a, b = loaded.series
    assert (a.name, b.name) == ("a", "b")
    assert a.values.tolist() == [1.5, 2.5, 3.5] and b.values.tolist() == [7.0, 8.0, 9.0]
    assert b.covariates[:, 0].tolist() == [8.0, 8.0, 7.0]
    assert a.timestamps == ["1", "2", "3"]


def test_tsv_by_suffix_and_explicit_long_columns(tmp_path):
    text = "id\tday\ty\nq\t1\t4\nq\t2\t5\n"
    loaded = load(
        write(tmp_path, text, "s.tsv"),
        layout="long",
        series_column="id",
        time_column="day",
        value_column="y",
    )
    assert loaded.series[0].values.tolist() == [4.0, 5.0]


def test_missing_values_interpolated_and_counted(tmp_path):
    text = "time,a\n1,2\n2,\n3,NA\n4,8\n"
    loaded = load(write(tmp_path, text), missing="interpolate")
    assert loaded.series[0].values.tolist() == [2.0, 4.0, 6.0, 8.0]
    assert "filled 2 (missing values interpolated)" in loaded.report.summary()
    long = "series,time,value\na,1,?\na,2,3\na,3,nan\n"
    assert load(write(tmp_path, long), missing="interpolate").series[0].values.tolist() == [3.0] * 3


def test_skip_policies_count_what_they_skip(tmp_path):
    text = "time,a,b,c\n1,1,1,\n2,,2,\n3,3,3,\n4,4,4,5\n"
    loaded = load(write(tmp_path, text), minimum=3, missing="skip", short_series="skip")
    assert [series.name for series in loaded.series] == ["b"]
    assert loaded.report.skipped == {
        "series with missing values": 1,
        "series shorter than 3 steps": 1,
    }


@pytest.mark.parametrize(
    ("text", "options", "line", "problem"),
    [
        ("", {}, None, "empty file"),
        ("\n\n", {}, None, "empty file"),
        ("time,a\n", {}, None, "no rows of values after the header"),
        ("time,a\n1,2\n2,3,4\n", {}, 3, "expected 2 fields (as the header), found 3"),
        ("time,a\n1,2\n2\n", {}, 3, "expected 2 fields (as the header), found 1"),
        ("time,a\n1,2\n2,x7\n", {}, 3, "column 'a': expected a finite number, found 'x7'"),
        ("time,a\n1,inf\n", {}, 2, "column 'a': expected a finite number, found 'inf'"),
        ("time,a\n1,2\n2,\n3,4\n", {}, 3, "missing value in column 'a' (series 'a')"),
        ("time,a,a\n1,2,3\n", {}, 1, "column name 'a' appears twice"),
        ("time,,b\n1,2,3\n", {}, 1, "column 2 has no name"),
        ("time,a\n1,2\n", {"covariates": ("temp",)}, 1, "no column 'temp' (--data.covariates)"),
        ("a,b\n1,2\n", {"time_column": "when"}, 1, "no column 'when' (--data.time_column)"),
        ("time,a\n1,2\n1,3\n", {}, 3, "timestamp '1' of series 'a' repeats line 2"),
        ("time,a\n2,2\n1,3\n", {}, 3, "timestamp 1 of series 'a' comes after 2"),
        ("time,temp\n1,2\n", {"covariates": ("temp",)}, None, "no series columns"),
        ("series,time,value\na,1,1\nb,1,2\na,1,3\n", {}, 4, "timestamp '1' of series 'a' repeats"),
        ("series,time,value,extra\na,1,1,0\n", {}, 1, "column 'extra' is not used"),
        ("series,value\na,1\n", {}, 1, "no column 'time' (--data.time_column)"),
        ("s,time,value\na,1,1\n", {"layout": "long"}, 1, "no column 'series'"),
        ("series,time,value\n,1,1\n", {}, 2, "empty series name"),
        ("series,time,value,p\na,1,1,\n", {"covariates": ("p",)}, 2, "missing value in column 'p'"),
        ("time,a\n1,\n2,\n", {"missing": "interpolate"}, None, "series 'a' has 0 steps"),
    ],
)
def test_malformed_files_are_refused_with_file_line_and_problem(
    tmp_path, text, options, line, problem
):
    path = write(tmp_path, text)
    with pytest.raises(DataFileError) as caught:
        load(path, **options)
    assert problem in caught.value.problem
    assert caught.value.path == path and caught.value.line == line
    assert str(caught.value).startswith(str(path))


def test_interpolation_needs_one_known_value(tmp_path):
    path = write(tmp_path, "series,time,value\na,1,\na,2,\n")
    with pytest.raises(DataFileError, match="series 'a' has no value in column 'value'"):
        load(path, missing="interpolate")


def test_a_short_series_is_named_with_its_length(tmp_path):
    path = write(tmp_path, LONG)
    with pytest.raises(DataFileError, match="series 'a' has 3 steps, fewer than the 5 needed for"):
        load_series(path, SeriesFormat(covariates=("price",)), 5, "context 3 + horizon 2")
    skip = SeriesFormat(covariates=("price",), short_series="skip")
    with pytest.raises(DataFileError, match="no series left.*skipped 2 \\(series shorter than 5"):
        load_series(path, skip, 5)


def test_a_file_that_cannot_be_read(tmp_path):
    with pytest.raises(DataFileError, match="cannot read the file"):
        load(tmp_path / "absent.csv")
    path = tmp_path / "latin.csv"
    path.write_bytes(b"time,\xe9\n1,2\n")
    with pytest.raises(DataFileError, match="cannot read the file"):
        load(path)
