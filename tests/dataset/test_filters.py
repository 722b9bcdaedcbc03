"""Tests for bidsapp.dataset.filters: the one label check, light enough for the settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bidsapp.dataset.filters import normalize_labels
from bidsapp.dataset.input_files import QueryError


def test_settings_import_neither_pybids_nor_the_query():
    code = (
        "import sys, bidsapp.app.config\n"
        "print(sorted(m for m in ('bids', 'bidsapp.dataset.query', 'bidsapp.dataset.layout')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_normalize_labels_keeps_order_and_drops_prefixes_and_repeats():
    assert normalize_labels(["sub-02", "01", "02"], "sub", "participant label") == ("02", "01")
    assert normalize_labels("ses-1", "ses", "session label") == ("1",)
    assert normalize_labels(None, "task", "task label") is None


class _UsageError(ValueError):
    pass


@pytest.mark.parametrize("labels", ["../x", ["01", ""], []])
def test_normalize_labels_refuses_with_the_callers_error(labels):
    with pytest.raises(QueryError, match="^participant label: "):
        normalize_labels(labels, "sub", "participant label")
    with pytest.raises(_UsageError, match="^--participant-label: "):
        normalize_labels(labels, "sub", "--participant-label", error=_UsageError)
