"""The fast readers of bidsapp's own tables: numeric TSVs (timeseries) and status tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bidsapp.dataset import status_tables, tsvio


def test_numeric_table_reads_back_every_float64_exactly(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 7)) * 10.0 ** rng.integers(-300, 300, size=(50, 7))
    values[3, 2] = np.nan
    frame = pd.DataFrame(values, columns=[f"region {i}" for i in range(7)])
    path = tsvio.atomic_write_tsv(tmp_path / "t.tsv", frame)
    table = tsvio.numeric_table(path.read_text())
    assert table.columns.tolist() == frame.columns.tolist()
    assert np.array_equal(table.to_numpy(), values, equal_nan=True)  # bit for bit
    assert table.dtypes.eq(np.float64).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\tb\n1\tabc\n", "abc"),
        ("a\tb\n1\t\n", "''"),
        ("a\tb\n1\t2\n3\n", "do not fill rows"),
        ("a\tb\n1\t2n/a\n", "could not convert"),
    ],
)
def test_numeric_table_names_what_is_not_a_number(text, message):
    with pytest.raises(ValueError, match=message):
        tsvio.numeric_table(text)


def test_numeric_table_without_rows_has_the_columns():
    assert tsvio.numeric_table("a\tb\n").columns.tolist() == ["a", "b"]
    assert len(tsvio.numeric_table("a\tb\n")) == 0


def _status_bytes(tmp_path, rows):
    path = status_tables.write_subject_status(tmp_path, "01", rows)
    return path.read_bytes()


def test_status_rows_agree_with_the_pandas_reader(tmp_path):
    rows = [
        {"subject": "01", "task": "rest", "run": "1", "space": "MNI152NLin2009cAsym",
         "atlas": "Schaefer2018", "stat": "mean", "denoise": "simple", "status": "ok",
         "volumes_total": 100, "volumes_kept": 96, "mean_fd": 0.125, "regions_below_coverage": 0},
        {"subject": "01", "task": "rest", "run": "2", "space": "MNI152NLin2009cAsym",
         "atlas": "Schaefer2018", "stat": "mean", "denoise": "simple", "status": "failed",
         "reason": "no confounds"},
    ]  # fmt: skip
    raw = _status_bytes(tmp_path, rows)
    parsed = status_tables.status_rows(raw)
    table = status_tables.read_subject_status(tmp_path, "01")
    assert len(parsed) == len(table) == 2
    for row, (_, expected) in zip(parsed, table.iterrows(), strict=True):
        for column in status_tables.STATUS_COLUMNS:
            value = expected[column]
            assert (row[column] is None) == bool(pd.isna(value)), column
            if row[column] is not None:
                assert row[column] == value, column
    assert parsed[0]["volumes_kept"] == 96 and isinstance(parsed[0]["volumes_kept"], int)
    assert parsed[0]["mean_fd"] == 0.125 and parsed[1]["mean_fd"] is None


def test_status_rows_refuse_a_table_that_is_not_one(tmp_path):
    header = "\t".join(status_tables.STATUS_COLUMNS)
    width = len(status_tables.STATUS_COLUMNS)
    with pytest.raises(ValueError, match="line 2"):
        status_tables.status_rows(f"{header}\na\tb\n".encode())
    counts = ["n/a"] * width
    counts[status_tables.STATUS_COLUMNS.index("volumes_kept")] = "12.5"
    with pytest.raises(ValueError, match="volumes_kept"):
        status_tables.status_rows(f"{header}\n{chr(9).join(counts)}\n".encode())
    with pytest.raises(ValueError, match="empty"):
        status_tables.status_rows(b"")
