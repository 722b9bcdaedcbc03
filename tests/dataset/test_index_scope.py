"""The pybids index at scale: only the queried files, only the queried participants, shared safely.

Costs are measured in ``benchmarks/bench_scale.py``; these tests check what makes them flat:
which folders are read, what pybids is given, and that a shared index is built once, read
by every job and never trusted when it no longer lists a participant's files.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bidsapp.dataset import layout as layout_module
from bidsapp.dataset.query import find_runs

TPL = "MNI152NLin2009cAsym"
SMALL = {"n_volumes": 8, "n_dummy": 1, "high_motion_volumes": (), "voxel_size_mm": 8.0}


def _names(runs) -> list[str]:
    return [run.name for run in runs]


@pytest.fixture
def three_subjects(make_dataset) -> Path:
    """Subjects 01-03, one run each, with fMRIPrep's other outputs beside them."""
    root = make_dataset(subjects=["01", "02", "03"], runs=[1], t1w_space=True, **SMALL)
    for subject in ("01", "02", "03"):
        func = root / f"sub-{subject}" / "func"
        stem = f"sub-{subject}_task-rest_run-1"
        for name in (
            f"{stem}_space-fsLR_den-91k_bold.dtseries.nii",
            f"{stem}_hemi-L_space-fsaverage_bold.func.gii",
            f"{stem}_from-boldref_to-T1w_mode-image_desc-coreg_xfm.txt",
            f"{stem}_space-{TPL}_res-2_boldref.nii.gz",
        ):
            (func / name).write_bytes(b"")
        (root / f"sub-{subject}.html").write_text("<html></html>")
    return root


def _folders_listed(monkeypatch) -> list[str]:
    """Record every folder ``os.scandir`` lists from now on."""
    listed: list[str] = []
    real = os.scandir

    def recording(path="."):
        listed.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", recording)
    return listed


def test_one_participant_reads_only_its_folders(three_subjects, monkeypatch):
    listed = _folders_listed(monkeypatch)
    (run,) = find_runs(three_subjects, participant_labels=["02"])
    assert run.name == "sub-02_task-rest_run-1" and run.problem is None
    assert run.t_r == 2.0 and run.brain_mask is not None and run.confounds is not None
    assert any("sub-02" in path for path in listed)
    assert not [path for path in listed if "sub-01" in path or "sub-03" in path]


def test_pybids_is_given_only_the_files_a_query_uses(three_subjects):
    dataset = layout_module.open_layout(three_subjects, subjects=["01"])
    indexed = sorted(Path(f.path).name for f in dataset.layout.get())
    assert indexed  # the run's BOLD, masks and confounds
    assert all(
        name.endswith(("_bold.nii.gz", "_mask.nii.gz", "_timeseries.tsv")) for name in indexed
    ), indexed
    assert all(name.startswith("sub-01_") for name in indexed)
    assert not [n for n in indexed if n.endswith((".json", ".gii", ".txt", "boldref.nii.gz"))]
    assert "sub-01_task-rest_run-1_space-fsLR_den-91k_bold.dtseries.nii" not in indexed


def test_the_listed_index_equals_what_pybids_own_walk_indexes(three_subjects):
    """Same files, same entities as pybids's walk with the same ignore rules."""
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    ours = layout_module.open_layout(three_subjects).layout
    walk = BIDSLayoutIndexer(
        validate=False,
        ignore=[layout_module._IGNORED_FOLDERS, layout_module._UNQUERIED],
        index_metadata=False,
    )
    theirs = BIDSLayout(
        three_subjects, validate=False, config=["bids", "derivatives"], indexer=walk
    )
    assert {f.path: f.get_entities() for f in ours.get()} == {
        f.path: f.get_entities() for f in theirs.get()
    }
    assert len(ours.get()) > 20


def test_a_missing_participant_is_still_explained_with_the_whole_dataset(three_subjects):
    from bidsapp.dataset.query import NoRunsFoundError

    with pytest.raises(NoRunsFoundError) as error:
        find_runs(three_subjects, participant_labels=["09"])
    message = str(error.value)
    assert f"Subjects with preprocessed BOLD in space {TPL}: 01, 02, 03." in message
    assert "Participant(s) 09 are not in the dataset." in message


def test_figures_and_sidecars_do_not_change_the_stored_index(three_subjects, tmp_path):
    database = tmp_path / "db"
    assert len(find_runs(three_subjects, database_dir=database)) == 3
    (stored,) = database.glob("index-*/layout_index.sqlite")
    (three_subjects / "sub-01" / "figures").mkdir(exist_ok=True)
    (three_subjects / "sub-01" / "figures" / "sub-01_desc-about_T1w.html").write_text("")
    (
        three_subjects / "sub-02" / "func" / "sub-02_task-rest_run-1_desc-hmc_boldref.json"
    ).write_text("{}")
    assert len(find_runs(three_subjects, database_dir=database)) == 3
    assert list(database.glob("index-*/layout_index.sqlite")) == [stored]


# ------------------------------------------------------------ --bids-database-dir


def test_a_shared_index_is_built_once_and_read_by_later_jobs(three_subjects, tmp_path):
    shared = tmp_path / "shared"
    (run,) = find_runs(three_subjects, participant_labels=["03"], bids_database_dir=shared)
    assert run.name == "sub-03_task-rest_run-1"
    database = shared / "layout_index.sqlite"
    built = database.stat().st_mtime_ns
    with sqlite3.connect(database) as connection:
        paths = [row[0] for row in connection.execute("SELECT path FROM files")]
    # The whole dataset, though the first job asked for one participant.
    assert {Path(p).name.split("_")[0] for p in paths} == {"sub-01", "sub-02", "sub-03"}
    assert _names(find_runs(three_subjects, participant_labels="01", bids_database_dir=shared)) == [
        "sub-01_task-rest_run-1"
    ]
    assert len(find_runs(three_subjects, bids_database_dir=shared)) == 3
    assert database.stat().st_mtime_ns == built  # read, never written again
    assert not list(shared.glob(".layout_index.tmp-*"))


def test_a_shared_index_that_misses_new_files_is_not_trusted(
    three_subjects, tmp_path, make_dataset, caplog
):
    shared = tmp_path / "shared"
    assert len(find_runs(three_subjects, bids_database_dir=shared)) == 3
    extra = make_dataset(subjects=["02"], runs=[2], **SMALL)
    for path in (extra / "sub-02" / "func").iterdir():
        shutil.copy(path, three_subjects / "sub-02" / "func" / path.name)
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.layout"):
        runs = find_runs(three_subjects, participant_labels="02", bids_database_dir=shared)
    assert _names(runs) == ["sub-02_task-rest_run-1", "sub-02_task-rest_run-2"]
    assert "does not list the current files of sub-02" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.layout"):
        (other,) = find_runs(three_subjects, participant_labels="01", bids_database_dir=shared)
    assert other.name == "sub-01_task-rest_run-1" and not caplog.text  # its files are listed
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.layout"):
        assert len(find_runs(three_subjects, bids_database_dir=shared)) == 4


def test_a_shared_index_of_another_folder_or_garbage_is_not_used(
    three_subjects, tmp_path, make_dataset, caplog
):
    other = make_dataset(subjects=["07"], runs=[1], **SMALL)
    shared = tmp_path / "shared"
    find_runs(other, bids_database_dir=shared)
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.layout"):
        assert len(find_runs(three_subjects, bids_database_dir=shared)) == 3
    assert "does not list the current files" in caplog.text
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "layout_index.sqlite").write_bytes(b"not a database at all" * 100)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.layout"):
        assert (
            len(find_runs(three_subjects, participant_labels="01", bids_database_dir=garbage)) == 1
        )
    assert "Cannot use the pybids database" in caplog.text and str(garbage) in caplog.text


_JOB = """
import sys
from bidsapp.dataset.query import find_runs
runs = find_runs(sys.argv[1], participant_labels=sys.argv[3] or None, bids_database_dir=sys.argv[2])
print(" ".join(run.name for run in runs))
"""


def test_concurrent_jobs_build_one_shared_index(three_subjects, tmp_path):
    shared = tmp_path / "shared"
    labels = ["01", "02", "03", "", "02"]
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", _JOB, str(three_subjects), str(shared), label],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for label in labels
    ]
    outputs = [job.communicate(timeout=300) for job in jobs]
    for job, (stdout, stderr), label in zip(jobs, outputs, labels, strict=True):
        assert job.returncode == 0, stderr
        expected = [f"sub-{s}_task-rest_run-1" for s in ([label] if label else ["01", "02", "03"])]
        assert stdout.split() == expected
        assert "does not list" not in stderr and "Cannot use" not in stderr, stderr
    assert [p.name for p in shared.iterdir() if p.suffix == ".sqlite"] == ["layout_index.sqlite"]
    assert not list(shared.glob(".layout_index.tmp-*"))


def test_the_command_line_passes_the_shared_index(three_subjects, tmp_path):
    from bidsapp.app.config import make_config
    from bidsapp.app.selection import find_selected_runs

    shared = tmp_path / "shared"
    config = make_config(
        three_subjects, tmp_path / "out", participant_label="01", bids_database_dir=shared
    )
    assert config.bids_database_dir == shared
    assert _names(find_selected_runs(config)) == ["sub-01_task-rest_run-1"]
    assert (shared / "layout_index.sqlite").is_file()


def test_the_subject_scope_pattern_keeps_only_the_labelled_folders():
    scope = layout_module._scope_pattern(["01", "1a"])
    paths = ["/sub-01", "/sub-01/func", "/sub-011", "/sub-1a", "/sub-02/anat", "/sub-01.html"]
    ignored = [path for path in [*paths, "/dataset_description.json"] if scope.search(path)]
    assert ignored == ["/sub-011", "/sub-02/anat", "/sub-01.html"]
    assert layout_module._scope_pattern(None) is None
