"""The loaders of labelled sequences: .ts (UCR/UEA), wide and long CSV/TSV, .npz; every
malformed case refused with the file, the line (or array) and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from rnnkit.data.files import DataFileError
from rnnkit.data.files.csv_sequences import load_csv
from rnnkit.data.files.npz_sequences import load_npz
from rnnkit.data.files.ts_format import load_ts

TS_HEADER = """# a comment
% another comment
@problemName Tiny
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(load, path: Path, *fragments: str, **options) -> str:
    """The message of the ``DataFileError`` ``load(path)`` raises; it names the file and each
    of ``fragments``."""
    with pytest.raises(DataFileError) as caught:
        load(path, **options)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- .ts -----------------------------------------------------------------------------------


def test_ts_reads_unequal_multivariate_cases(tmp_path):
    path = write(tmp_path, "a.ts", TS_HEADER + "1,2,3:4,5,6:up\n\n0.5,-1e2:7,8:down\n")
    data = load_ts(path)
    assert data.labels == ["up", "down"]
    assert data.locations == ["line 11", "line 13"]
    assert_array_equal(data.values[0], [[1, 4], [2, 5], [3, 6]])
    assert_array_equal(data.values[1], [[0.5, 7], [-100, 8]])
    assert data.num_features == 2 and list(data.lengths()) == [3, 2]
    assert data.report.summary() == f"{path}: 2 read"


def test_ts_keys_are_case_insensitive_and_univariate_needs_no_dimensions(tmp_path):
    text = "@PROBLEMNAME x\n@univariate TRUE\n@classlabel true 1 2\n@DATA\n1,2:2\n3:1\n"
    data = load_ts(write(tmp_path, "u.ts", text))
    assert data.labels == ["2", "1"] and data.num_features == 1


def test_ts_missing_values_by_policy(tmp_path):
    path = write(tmp_path, "m.ts", TS_HEADER + "1,?,3,NaN:4,5,6,7:up\n")
    refused(load_ts, path, "line 11", "missing value at step 2, feature 1 (2 in this sequence)")
    interpolated = load_ts(path, missing="interpolate")
    assert_array_equal(interpolated.values[0][:, 0], [1, 2, 3, 3])  # the end takes the last
    assert interpolated.report.filled == {"missing values interpolated": 2}
    zero = load_ts(path, missing="zero")
    assert_array_equal(zero.values[0][:, 0], [1, 0, 3, 0])
    assert "filled 2 (missing values set to zero)" in zero.report.summary()
    empty = write(tmp_path, "e.ts", TS_HEADER + "?,?:1,2:up\n")
    refused(load_ts, empty, "line 11", "feature 1 has no value", missing="interpolate")


def test_ts_unlabelled_file_is_for_prediction_only(tmp_path):
    path = write(tmp_path, "p.ts", "@univariate true\n@classLabel false\n@data\n1,2,3\n")
    refused(load_ts, path, "line 2", "@classLabel false")
    data = load_ts(path, require_labels=False)
    assert data.labels is None and len(data) == 1


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("1,2:3,4:left\n", ("line 11", "label 'left' is not one of @classLabel up down")),
        ("1,2:up\n", ("line 11", "expected 2 dimensions, found 1 dimension")),
        ("1,2:3:up\n", ("line 11", "the dimensions of a case differ in length (2, 1)")),
        ("1,x:3,4:up\n", ("line 11", "dimension 1, value 2: 'x' is not a number")),
        ("1,inf:3,4:up\n", ("line 11", "'inf' is not a number")),
        ("1,2,3\n", ("line 11", "a case needs values")),
        ("", ("no sequences in the file",)),
    ],
)
def test_ts_refuses_bad_cases(tmp_path, body, fragments):
    refused(load_ts, write(tmp_path, "bad.ts", TS_HEADER + body), *fragments)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ("no @data line",)),
        ("@classLabel true a\n1,2:a\n", ("line 2", "expected a header line")),
        ("@colour red\n@data\n", ("line 1", "unknown header @colour")),
        ("@classLabel true a\n@classLabel true b\n@data\n", ("line 2", "declared twice")),
        ("@timeStamps true\n@data\n", ("line 1", "time-stamped series")),
        ("@targetLabel true\n@data\n", ("line 1", "regression")),
        ("@univariate maybe\n@data\n", ("line 1", "@univariate expects true or false")),
        ("@dimensions two\n@data\n", ("line 1", "@dimensions expects a positive integer")),
        ("@classLabel true\n@data\n", ("line 1", "@classLabel true lists no labels")),
        ("@univariate true\n@data\n1:a\n", ("line 2", "@data before @classLabel")),
        (
            "@univariate true\n@classLabel true a\n@data\n1,2:3,4:a\n",
            ("line 4", "expected 1 dimensions, found 2"),
        ),
        (
            "@classLabel true a\n@data\n1,2:a\n1,2:3,4:a\n",
            ("line 4", "2 dimensions, the first case (line 3) has 1"),
        ),
        (
            "@equalLength true\n@classLabel true a\n@data\n1,2:a\n1,2,3:a\n",
            ("line 5", "@equalLength true, but this case has 3 values and the first has 2"),
        ),
        (
            "@equalLength true\n@seriesLength 3\n@classLabel true a\n@data\n1,2:a\n",
            ("line 5", "@seriesLength is 3, this case has 2 values"),
        ),
    ],
)
def test_ts_refuses_bad_headers(tmp_path, text, fragments):
    refused(load_ts, write(tmp_path, "bad.ts", text), *fragments)


def test_ts_repeated_problem_name_is_allowed(tmp_path):
    text = "@problemName a\n@problemName b\n@classLabel true x\n@data\n1:x\n"
    assert len(load_ts(write(tmp_path, "names.ts", text))) == 1


def test_ts_refuses_binary_files(tmp_path):
    path = tmp_path / "binary.ts"
    path.write_bytes(b"@data\n\xff\xfe\n")
    refused(load_ts, path, "not UTF-8 text")


# --- CSV ----------------------------------------------------------------------------------


def test_wide_csv_rows_end_early_at_trailing_empty_cells(tmp_path):
    path = write(tmp_path, "w.csv", "t1,label,t2,t3\n1,a,2,3\n4,b,5,\n\n6,a,?,7\n")
    data = load_csv(path, missing="interpolate")
    assert data.labels == ["a", "b", "a"]
    assert data.locations == ["line 2", "line 3", "line 5"]
    assert [list(values[:, 0]) for values in data.values] == [[1, 2, 3], [4, 5], [6, 6.5, 7]]
    assert data.report.filled == {"missing values interpolated": 1}
    refused(load_csv, path, "line 5", "missing value at step 2")


def test_tsv_and_a_named_label_column(tmp_path):
    path = write(tmp_path, "w.tsv", "class\tx1\tx2\nup\t1\t2\n")
    data = load_csv(path, label_column="class")
    assert data.labels == ["up"] and list(data.values[0][:, 0]) == [1, 2]


def test_long_csv_groups_by_id_and_orders_by_time(tmp_path):
    text = "id,time,x,y,label\nb,1,5,6,run\na,1,3,4,walk\na,0,1,2,walk\nb,0,7,8,run\na,2,9,9,walk\n"
    data = load_csv(write(tmp_path, "l.csv", text))
    assert data.labels == ["run", "walk"]
    assert data.locations == ["line 2", "line 3"]  # each sequence's first row in the file
    assert_array_equal(data.values[0], [[7, 8], [5, 6]])
    assert_array_equal(data.values[1], [[1, 2], [3, 4], [9, 9]])
    unordered = load_csv(write(tmp_path, "n.csv", "id,x,label\na,1,u\na,2,u\n"), layout="long")
    assert_array_equal(unordered.values[0][:, 0], [1, 2])  # no time column: file order


def test_csv_without_labels_is_for_prediction_only(tmp_path):
    path = write(tmp_path, "p.csv", "t1,t2\n1,2\n")
    refused(load_csv, path, "line 1", "no label column 'label'", "columns: t1, t2")
    assert load_csv(path, require_labels=False).labels is None


@pytest.mark.parametrize(
    ("text", "options", "fragments"),
    [
        ("", {}, ("the file is empty",)),
        ("label,t1\n", {}, ("a header row but no data rows",)),
        ("label,t1,t2\na,1,2\nb,1\n", {}, ("line 3", "2 fields, the header has 3")),
        ("label,t1\na,1\nb,one\n", {}, ("line 3", "column 't1': 'one' is not a number")),
        ("label,t1\n,1\n", {}, ("line 2", "an empty label")),
        ("label,t1\na,\n", {}, ("line 2", "a row without values")),
        ("label,t1,t1\na,1,2\n", {}, ("line 1", "repeated column names: t1")),
        ("label\na\n", {}, ("line 1", "no value columns")),
        ("id,time,x,label\na,0,1,u\na,1,2,v\n", {}, ("line 3", "id 'a': label 'v', but 'u'")),
        ("id,time,x,label\na,0,1,u\na,0,2,u\n", {}, ("line 3", "time 0 again (first on line 2)")),
        ("id,time,x,label\na,,1,u\n", {}, ("line 2", "id 'a': a missing time")),
        ("id,time,label\na,0,u\n", {}, ("line 1", "no feature columns")),
        ("id,x,label\n,1,u\n", {}, ("line 2", "an empty 'id'")),
        ("id,x,label\na,1,u\na,?,u\n", {}, ("line 2 (id a)", "missing value at step 2")),
        ("x,label\n1,u\n", {"layout": "long"}, ("line 1", "needs an 'id' column")),
    ],
)
def test_csv_refuses_bad_tables(tmp_path, text, options, fragments):
    refused(load_csv, write(tmp_path, "bad.csv", text), *fragments, **options)


def test_csv_options_are_checked():
    with pytest.raises(ValueError, match="layout must be one of auto, wide, long"):
        load_csv("x.csv", layout="tall")
    with pytest.raises(ValueError, match="missing must be one of error, interpolate, zero"):
        load_csv("x.csv", missing="drop")


# --- NPZ ----------------------------------------------------------------------------------


def test_npz_reads_padded_sequences_with_lengths(tmp_path):
    features = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
    features[1, 3] = np.nan  # padding after length 3: ignored
    path = tmp_path / "s.npz"
    np.savez(path, X=features, lengths=np.array([4, 3, 1]), y=np.array(["a", "b", "a"]))
    data = load_npz(path)
    assert data.labels == ["a", "b", "a"] and data.locations[2] == "sequence 2"
    assert [len(values) for values in data.values] == [4, 3, 1]
    assert_array_equal(data.values[1], features[1, :3])
    integers = tmp_path / "i.npz"
    np.savez(integers, X=np.ones((2, 5)), y=np.array([3, 10]))
    data = load_npz(integers)
    assert data.labels == ["3", "10"] and data.values[0].shape == (5, 1)


def test_npz_missing_values_by_policy(tmp_path):
    features = np.array([[[1.0], [np.nan], [5.0]]])
    path = tmp_path / "m.npz"
    np.savez(path, X=features, y=np.array([0]))
    refused(load_npz, path, "array 'X', sequence 0", "missing value at step 2")
    assert_array_equal(load_npz(path, missing="interpolate").values[0][:, 0], [1, 3, 5])


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        ({"y": np.zeros(2)}, ("no array 'X' (the sequences); arrays: y",)),
        ({"X": np.zeros(3), "y": np.zeros(3, int)}, ("array 'X'", "expected (N, T, D)")),
        ({"X": np.zeros((1, 0, 2)), "y": np.zeros(1, int)}, ("array 'X'", "got shape (1, 0, 2)")),
        ({"X": np.array([["a"]]), "y": np.zeros(1, int)}, ("array 'X'", "expected real numbers")),
        ({"X": np.zeros((2, 3))}, ("no array 'y' (the labels)",)),
        ({"X": np.zeros((2, 3)), "y": np.zeros(3, int)}, ("array 'y'", "expected (2,) labels")),
        ({"X": np.zeros((2, 3)), "y": np.zeros(2)}, ("array 'y'", "integers or strings")),
        ({"X": np.zeros((1, 3)), "y": np.array([""])}, ("array 'y'", "an empty label")),
        (
            {"X": np.zeros((2, 3)), "y": np.zeros(2, int), "lengths": np.array([1.0, 2.0])},
            ("array 'lengths'", "expected (2,) integers"),
        ),
        (
            {"X": np.zeros((2, 3)), "y": np.zeros(2, int), "lengths": np.array([3, 4])},
            ("array 'lengths'", "sequence 1: length 4 outside 1..3"),
        ),
        (
            {"X": np.array([[1.0, np.inf]]), "y": np.zeros(1, int)},
            ("array 'X', sequence 0", "an infinite value"),
        ),
    ],
)
def test_npz_refuses_bad_arrays(tmp_path, arrays, fragments):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    refused(load_npz, path, *fragments)


def test_npz_refuses_pickles_and_other_files(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, X=np.array([np.zeros(2), None], dtype=object), y=np.zeros(2, int))
    refused(load_npz, pickled, "without pickles")
    text = write(tmp_path, "text.npz", "not an archive")
    refused(load_npz, text, "not a NumPy .npz archive")
    refused(load_npz, tmp_path / "absent.npz", "cannot read the file")
