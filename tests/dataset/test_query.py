"""find_runs: the right runs and files under every filter, nothing written to inputs."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import pytest

from bidsapp import synthetic as demo
from bidsapp.dataset.filters import load_bids_filters
from bidsapp.dataset.input_files import QueryError
from bidsapp.dataset.layout import describe_preproc_bold
from bidsapp.dataset.query import BoldRun, NoRunsFoundError, find_runs

TPL = "MNI152NLin2009cAsym"
# Tiny runs: query tests only look at file names and sidecars.
SMALL = {"n_volumes": 8, "n_dummy": 1, "high_motion_volumes": (), "voxel_size_mm": 8.0}


@pytest.fixture(scope="module")
def rich_dataset(tmp_path_factory) -> Path:
    """2 subjects x 2 sessions x 2 tasks x (no acq, acq-mb4) x 2 runs, plus T1w/AROMA."""
    return demo.make_fmriprep_dataset(
        tmp_path_factory.mktemp("rich") / "fmriprep",
        subjects=["01", "02"],
        sessions=["1", "2"],
        tasks=["rest", "nback"],
        acquisitions=[None, "mb4"],
        runs=[1, 2],
        anat_only_subjects=["03"],
        **SMALL,
    )


def _names(runs: list[BoldRun]) -> list[str]:
    return [run.name for run in runs]


# ------------------------------------------------------------------ basics


def test_default_dataset_runs_and_files(fmriprep_dataset):
    runs = find_runs(fmriprep_dataset)
    assert _names(runs) == [
        "sub-01_task-rest_run-1",
        "sub-01_task-rest_run-2",
        "sub-02_task-rest_run-1",
        "sub-02_task-rest_run-2",
    ]
    run = runs[0]
    func = fmriprep_dataset / "sub-01" / "func"
    stem = f"sub-01_task-rest_run-1_space-{TPL}_res-2"
    assert run.preproc_bold == func / f"{stem}_desc-preproc_bold.nii.gz"
    # the func mask, not the anat mask with the same space and res
    assert run.brain_mask == func / f"{stem}_desc-brain_mask.nii.gz"
    assert run.confounds == func / "sub-01_task-rest_run-1_desc-confounds_timeseries.tsv"
    assert run.t_r == 2.0
    assert run.aroma_bold is None
    assert run.entities == {
        "subject": "01",
        "task": "rest",
        "run": "1",
        "space": TPL,
        "res": "2",
    }
    with pytest.raises(AttributeError):
        run.t_r = 3.0  # frozen
    assert len({runs[0], runs[1], runs[0]}) == 2  # hashable despite the entities dict


def test_name_orders_entities_like_bids():
    run = BoldRun(
        preproc_bold=Path("x.nii.gz"),
        entities={
            "echo": "2",
            "run": "01",
            "direction": "AP",
            "reconstruction": "mag",
            "ceagent": "gd",
            "acquisition": "mb4",
            "task": "rest",
            "session": "1",
            "subject": "01",
            "space": TPL,
            "res": "2",
        },
    )
    assert run.name == "sub-01_ses-1_task-rest_acq-mb4_ce-gd_rec-mag_dir-AP_run-01_echo-2"


@pytest.mark.parametrize("labels", [["01"], ["sub-01"], "sub-01", ("01", "sub-01")])
def test_participant_labels_with_or_without_prefix(fmriprep_dataset, labels):
    runs = find_runs(fmriprep_dataset, participant_labels=labels)
    assert _names(runs) == ["sub-01_task-rest_run-1", "sub-01_task-rest_run-2"]


def test_sessions_tasks_and_labels_combine(rich_dataset):
    assert len(find_runs(rich_dataset)) == 32
    runs = find_runs(
        rich_dataset, participant_labels=["02"], session_labels=["ses-2"], tasks=["task-nback"]
    )
    assert _names(runs) == [
        "sub-02_ses-2_task-nback_run-1",
        "sub-02_ses-2_task-nback_run-2",
        "sub-02_ses-2_task-nback_acq-mb4_run-1",
        "sub-02_ses-2_task-nback_acq-mb4_run-2",
    ]
    assert all(run.confounds.name.startswith(run.name) for run in runs)
    assert all(run.brain_mask.name.startswith(run.name) for run in runs)


def test_results_are_sorted_and_deterministic(rich_dataset):
    first = find_runs(rich_dataset)
    assert _names(first)[:5] == [
        "sub-01_ses-1_task-nback_run-1",
        "sub-01_ses-1_task-nback_run-2",
        "sub-01_ses-1_task-nback_acq-mb4_run-1",
        "sub-01_ses-1_task-nback_acq-mb4_run-2",
        "sub-01_ses-1_task-rest_run-1",
    ]
    assert first == find_runs(rich_dataset)


def test_runs_sort_numerically(make_dataset):
    root = make_dataset(subjects=["01"], runs=[2, 10, 1], **SMALL)
    assert [run.entities["run"] for run in find_runs(root)] == ["1", "2", "10"]


# ----------------------------------------------------------------- filters


def test_bids_filters_dict_and_short_names(rich_dataset):
    filters = {
        "bold": {"session": "1", "run": [2], "task": "rest", "acq": None},
        "t1w": {"datatype": "anat", "suffix": "T1w"},  # other queries are ignored
    }
    runs = find_runs(rich_dataset, bids_filters=filters)
    assert _names(runs) == ["sub-01_ses-1_task-rest_run-2", "sub-02_ses-1_task-rest_run-2"]


def test_bids_filters_any_value(rich_dataset):
    runs = find_runs(rich_dataset, participant_labels="01", bids_filters={"bold": {"acq": "*"}})
    assert len(runs) == 8
    assert {run.entities["acquisition"] for run in runs} == {"mb4"}


def test_bids_filter_file(rich_dataset, tmp_path):
    path = tmp_path / "filter.json"
    path.write_text(
        json.dumps({"bold": {"datatype": "func", "suffix": "bold", "ses": "2", "run": 1}})
    )
    runs = find_runs(rich_dataset, bids_filters=path, tasks=["nback"], participant_labels="01")
    assert _names(runs) == [
        "sub-01_ses-2_task-nback_run-1",
        "sub-01_ses-2_task-nback_acq-mb4_run-1",
    ]


def test_filters_and_labels_intersect(rich_dataset):
    with pytest.raises(NoRunsFoundError, match="bids_filters"):
        find_runs(rich_dataset, participant_labels="01", bids_filters={"bold": {"subject": "02"}})


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"bold": {"colour": "red"}}, "unknown entity 'colour'"),
        ({"bold": {"space": "T1w"}}, "conflicts with space"),
        ({"bold": {"desc": "smoothAROMAnonaggr"}}, "desc"),
        ({"bold": "ses-1"}, "'bold' query must be an object"),
        (["bold"], "JSON object"),
    ],
)
def test_bad_bids_filters(fmriprep_dataset, filters, message):
    with pytest.raises(QueryError, match=message):
        find_runs(fmriprep_dataset, bids_filters=filters)


def test_unreadable_filter_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(QueryError, match="broken.json"):
        load_bids_filters(path)


@pytest.mark.parametrize(
    "arguments",
    [
        {"participant_labels": ["../x"]},
        {"participant_labels": ["sub-01/func"]},
        {"session_labels": ["1 2"]},
        {"tasks": ["rest*"]},
        {"participant_labels": [""]},
        {"space": "../MNI"},
    ],
)
def test_invalid_labels_are_rejected(fmriprep_dataset, arguments):
    with pytest.raises(ValueError, match="letters and digits"):
        find_runs(fmriprep_dataset, **arguments)


# ------------------------------------------------------------- file matching


def test_mask_must_match_res(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    func = root / "sub-01" / "func"
    mask = func / f"sub-01_task-rest_run-1_space-{TPL}_res-2_desc-brain_mask.nii.gz"
    other_res = func / f"sub-01_task-rest_run-1_space-{TPL}_res-1_desc-brain_mask.nii.gz"
    shutil.copy(mask, other_res)
    assert find_runs(root)[0].brain_mask == mask  # res-2, not res-1
    mask.unlink()
    assert (root / "sub-01" / "anat" / f"sub-01_space-{TPL}_res-2_desc-brain_mask.nii.gz").exists()
    assert find_runs(root)[0].brain_mask is None  # neither res-1 nor the anat mask


def test_fmriprep_1x_names(make_dataset):
    root = make_dataset(confounds_suffix="regressors", res=None, **SMALL)
    runs = find_runs(root)
    assert len(runs) == 4
    for run in runs:
        assert run.confounds.name == f"{run.name}_desc-confounds_regressors.tsv"
        assert "res" not in run.entities
        assert run.brain_mask.name == f"{run.name}_space-{TPL}_desc-brain_mask.nii.gz"


def test_several_confounds_files_are_never_chosen_between(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1, 2], **SMALL)
    func = root / "sub-01" / "func"
    timeseries = func / "sub-01_task-rest_run-1_desc-confounds_timeseries.tsv"
    regressors = func / "sub-01_task-rest_run-1_desc-confounds_regressors.tsv"
    shutil.copy(timeseries, regressors)
    first, second = find_runs(root)
    assert first.confounds is None
    assert str(timeseries) in first.problem and str(regressors) in first.problem
    assert second.problem is None and second.confounds.name.endswith(
        "run-2_desc-confounds_timeseries.tsv"
    )


def test_uncompressed_nifti(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], bold_extension=".nii", **SMALL)
    (run,) = find_runs(root)
    assert run.preproc_bold.name.endswith("_desc-preproc_bold.nii")
    assert run.brain_mask.name.endswith("_desc-brain_mask.nii")


def test_nii_and_nii_gz_of_one_run_are_never_chosen_between(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    (run,) = find_runs(root)
    uncompressed = Path(str(run.preproc_bold).removesuffix(".gz"))
    nib.save(nib.load(str(run.preproc_bold)), str(uncompressed))
    (again,) = find_runs(root)
    assert str(run.preproc_bold) in again.problem and str(uncompressed) in again.problem
    assert '"extension"' in again.problem  # says how to choose
    (narrowed,) = find_runs(root, bids_filters={"bold": {"extension": "nii"}})
    assert narrowed.preproc_bold == uncompressed and narrowed.problem is None


def test_figures_logs_and_sourcedata_are_not_indexed(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    (run,) = find_runs(root)
    decoys = [
        root / "sub-01" / "figures" / run.preproc_bold.name,
        root / "logs" / run.preproc_bold.name,
        root / "sourcedata" / "freesurfer" / run.preproc_bold.name,
    ]
    for decoy in decoys:
        decoy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run.preproc_bold, decoy)
    assert [r.preproc_bold for r in find_runs(root)] == [run.preproc_bold]


def test_aroma_and_t1w_outputs(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], aroma=True, t1w_space=True, **SMALL)
    (run,) = find_runs(root)
    assert run.aroma_bold.name == (
        "sub-01_task-rest_run-1_space-MNI152NLin6Asym_res-2_desc-smoothAROMAnonaggr_bold.nii.gz"
    )
    (native,) = find_runs(root, space="T1w")
    assert native.entities["space"] == "T1w"
    assert native.brain_mask.name == "sub-01_task-rest_run-1_space-T1w_desc-brain_mask.nii.gz"
    assert native.confounds == run.confounds
    # the AROMA image alone is not a preprocessed run in its space
    with pytest.raises(
        NoRunsFoundError, match="Spaces with preprocessed BOLD: MNI152NLin2009cAsym, T1w"
    ):
        find_runs(root, space="MNI152NLin6Asym")


def test_several_grids_of_one_run(make_dataset, caplog):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    (run,) = find_runs(root)
    shutil.copy(run.preproc_bold, str(run.preproc_bold).replace("res-2", "res-1"))
    with caplog.at_level(logging.INFO, logger="bidsapp.dataset.query"):
        runs = find_runs(root)
    assert [r.entities["res"] for r in runs] == ["1", "2"]
    assert runs[0].brain_mask is None and runs[1].brain_mask == run.brain_mask
    assert "several grids" in caplog.text and "each is processed" in caplog.text
    assert [r.entities["res"] for r in find_runs(root, bids_filters={"bold": {"res": "2"}})] == [
        "2"
    ]


# --------------------------------------------------------------- sidecars


def test_missing_repetition_time_is_none(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], write_tr=False, **SMALL)
    assert find_runs(root)[0].t_r is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("two", "not a number"),
        ("2", "not a number"),
        (True, "not a number"),
        ([2], "not a number"),
        (-2.0, "not a positive number"),
        (0, "not a positive number"),
        (2000, "looks like milliseconds"),
        (2000.0, "looks like milliseconds"),
        (0.001, "outside the plausible range"),
        (1e300, "outside the plausible range"),
        (10**400, "not a positive number"),
        (float("nan"), "not a positive number"),
    ],
)
def test_invalid_repetition_time_fails_only_its_run(make_dataset, value, message):
    root = make_dataset(subjects=["01"], runs=[1, 2], **SMALL)
    sidecar = next(root.rglob("*_run-1_*_desc-preproc_bold.json"))
    sidecar.write_text(json.dumps({"RepetitionTime": value, "TaskName": "rest"}))
    first, second = find_runs(root)
    assert first.t_r is None and first.sidecar == sidecar
    assert str(sidecar) in first.problem and message in first.problem
    assert "\n" not in first.problem
    assert second.problem is None and second.t_r == 2.0


def test_other_repetition_time(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], t_r=0.8, **SMALL)
    assert find_runs(root)[0].t_r == 0.8


# ----------------------------------------------------------- nothing found


def test_anatomical_only_subject(rich_dataset):
    with pytest.raises(NoRunsFoundError) as error:
        find_runs(rich_dataset, participant_labels=["sub-03"])
    message = str(error.value)
    assert str(rich_dataset) in message
    assert f"space={TPL}" in message
    assert "participant_labels=['03']" in message
    assert f"Subjects with preprocessed BOLD in space {TPL}: 01, 02." in message
    assert "Participant(s) 03 have outputs but no preprocessed BOLD" in message
    assert isinstance(error.value, ValueError)


def test_unknown_space_lists_spaces(fmriprep_dataset):
    with pytest.raises(NoRunsFoundError, match=f"Spaces with preprocessed BOLD: {TPL}"):
        find_runs(fmriprep_dataset, space="MNI152NLin6Asym")


def test_unknown_participant_is_reported(fmriprep_dataset):
    with pytest.raises(NoRunsFoundError, match="Participant\\(s\\) 07 are not in the dataset"):
        find_runs(fmriprep_dataset, participant_labels=["07"])


def test_some_participants_missing_warns(fmriprep_dataset, caplog):
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.query"):
        runs = find_runs(fmriprep_dataset, participant_labels=["01", "07"])
    assert {run.entities["subject"] for run in runs} == {"01"}
    assert "07" in caplog.text


def test_folder_without_bold(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    with pytest.raises(NoRunsFoundError, match="no desc-preproc_bold images at all"):
        find_runs(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(QueryError, match="does not exist"):
        find_runs(tmp_path / "nope")


def test_describe_preproc_bold(rich_dataset):
    described = describe_preproc_bold(rich_dataset)
    assert described == {
        "space": [TPL],
        "subject": ["01", "02"],
        "session": ["1", "2"],
        "task": ["nback", "rest"],
        "res": ["2"],
    }


# --------------------------------------------------------- inputs untouched


def test_read_only_dataset_is_not_written(fmriprep_dataset, snapshot_tree, tmp_path):
    assert not (fmriprep_dataset.stat().st_mode & 0o222)  # the fixture is read-only
    before = snapshot_tree(fmriprep_dataset)
    assert len(find_runs(fmriprep_dataset)) == 4
    assert len(find_runs(fmriprep_dataset, database_dir=tmp_path / "db")) == 4
    assert snapshot_tree(fmriprep_dataset) == before
    assert len(list((tmp_path / "db").glob("index-*/layout_index.sqlite"))) == 1


def test_database_dir_is_reused_while_the_files_are_the_same(make_dataset, tmp_path, read_only):
    root = make_dataset(subjects=["01"], runs=[1, 2], **SMALL)
    database = tmp_path / "db"
    assert len(find_runs(root, database_dir=database)) == 2
    (stored,) = database.glob("index-*/layout_index.sqlite")
    built = stored.stat().st_mtime_ns
    for path in root.rglob("*"):  # a touch changes no file name: the index is reused
        os.utime(path)
    assert len(find_runs(root, database_dir=database)) == 2
    assert list(database.glob("index-*/layout_index.sqlite")) == [stored]
    assert stored.stat().st_mtime_ns == built
    # A run added after indexing is seen: the file list changed, so a new index is built.
    extra = make_dataset(subjects=["01"], runs=[3], **SMALL)
    for path in (extra / "sub-01" / "func").iterdir():
        shutil.copy(path, root / "sub-01" / "func" / path.name)
    read_only(root)
    assert len(find_runs(root, database_dir=database)) == 3
    assert len(list(database.glob("index-*/layout_index.sqlite"))) == 2
    assert not list(database.glob(".*tmp*"))  # built aside, then renamed into place


def test_database_of_another_dataset_is_rebuilt(make_dataset, tmp_path, caplog):
    first = make_dataset(subjects=["01"], runs=[1], **SMALL)
    second = make_dataset(subjects=["05"], runs=[1, 2], **SMALL)
    database = tmp_path / "db"
    assert _names(find_runs(first, database_dir=database)) == ["sub-01_task-rest_run-1"]
    runs = find_runs(second, database_dir=database)
    assert _names(runs) == ["sub-05_task-rest_run-1", "sub-05_task-rest_run-2"]
    assert _names(find_runs(first, database_dir=database)) == ["sub-01_task-rest_run-1"]


# ------------------------------------------------ entities that tell runs apart


def _rename_with(root: Path, pattern: str, old: str, new: str) -> None:
    """Rename the files matching ``pattern`` (glob), replacing ``old`` by ``new``."""
    for path in sorted(root.rglob(pattern)):
        path.rename(path.with_name(path.name.replace(old, new)))


def test_part_mag_and_phase_are_two_runs_with_their_own_files(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    func = root / "sub-01" / "func"
    for path in sorted(func.iterdir()):
        for part in ("mag", "phase"):
            shutil.copy(path, func / path.name.replace("run-1_", f"run-1_part-{part}_"))
        path.unlink()
    runs = find_runs(root)
    assert _names(runs) == ["sub-01_task-rest_run-1_part-mag", "sub-01_task-rest_run-1_part-phase"]
    for run, part in zip(runs, ("mag", "phase"), strict=True):
        assert run.problem is None
        assert run.entities["part"] == part
        for path in (run.preproc_bold, run.brain_mask, run.confounds, run.sidecar):
            assert f"_part-{part}_" in path.name


def test_cohorts_are_two_runs_on_two_grids(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    func = root / "sub-01" / "func"
    for path in sorted(func.glob(f"*space-{TPL}_res-2_*")):
        for cohort in ("1", "2"):
            name = path.name.replace(f"space-{TPL}_", f"space-MNIInfant_cohort-{cohort}_")
            shutil.copy(path, func / name)
    runs = find_runs(root, space="MNIInfant")
    assert [r.entities.get("cohort") for r in runs] == ["1", "2"]
    assert {r.name for r in runs} == {"sub-01_task-rest_run-1"}
    for run in runs:
        assert run.problem is None
        assert f"cohort-{run.entities['cohort']}_" in run.brain_mask.name
        assert run.confounds.name == "sub-01_task-rest_run-1_desc-confounds_timeseries.tsv"
    assert len(find_runs(root, space="MNIInfant", bids_filters={"bold": {"cohort": "2"}})) == 1


def test_every_entity_reaches_the_run(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    func = root / "sub-01" / "func"
    extra = "ce-gad_rec-moco_dir-AP_run-1_echo-2_part-mag_chunk-3_"
    _rename_with(func, "*run-1_*", "run-1_", extra)
    (run,) = find_runs(root)
    assert run.problem is None, run.problem
    assert run.entities == {
        "subject": "01",
        "task": "rest",
        "ceagent": "gad",
        "reconstruction": "moco",
        "direction": "AP",
        "run": "1",
        "echo": "2",
        "part": "mag",
        "chunk": "3",
        "space": TPL,
        "res": "2",
    }
    assert run.name == "sub-01_task-rest_ce-gad_rec-moco_dir-AP_run-1_echo-2_part-mag_chunk-3"


def test_a_stray_file_with_an_unknown_entity_is_never_chosen_silently(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1, 2], **SMALL)
    (real, other) = find_runs(root)
    stray = real.preproc_bold.with_name(real.preproc_bold.name.replace("run-1_", "run-1_foo-bar_"))
    shutil.copy(real.preproc_bold, stray)
    first, second = find_runs(root)
    assert str(real.preproc_bold) in first.problem and str(stray) in first.problem
    assert second.problem is None
    real.preproc_bold.unlink()  # alone, its unknown entity still cannot be named
    (first, _) = find_runs(root)
    assert first.preproc_bold == stray and "foo-bar" in first.problem


def test_two_masks_for_one_run_are_a_problem(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    (run,) = find_runs(root)
    other = Path(str(run.brain_mask).removesuffix(".gz"))
    nib.save(nib.load(str(run.brain_mask)), str(other))
    (again,) = find_runs(root)
    assert again.brain_mask is None
    assert str(run.brain_mask) in again.problem and str(other) in again.problem


def test_a_name_that_contradicts_its_folder_is_a_problem(make_dataset):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    _rename_with(root / "sub-01" / "func", "sub-01_*", "sub-01_", "sub-02_")
    (run,) = find_runs(root)
    assert run.entities["subject"] == "02" and "sub-01" in run.problem


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "FIFO"),
        ("dangling", "dangling"),
        ("annexed", "not retrieved: run `datalad get`"),
        ("directory", "directory"),
        ("mask-fifo", "FIFO"),
        ("confounds-directory", "directory"),
        ("metadata-fifo", "FIFO"),
    ],
)
def test_unreadable_files_are_a_problem_not_a_hang(make_dataset, kind, message):
    root = make_dataset(subjects=["01"], runs=[1, 2], **SMALL)
    (run, other) = find_runs(root)
    target = {
        "mask": run.brain_mask,
        "confounds": run.confounds,
        "metadata": run.confounds.with_suffix(".json"),
    }.get(kind.split("-")[0], run.preproc_bold)
    target.unlink()
    if kind == "dangling":
        target.symlink_to(target.with_name("gone.nii.gz"))
    elif kind == "annexed":  # how DataLad keeps a file that was never fetched
        target.symlink_to(root / ".git" / "annex" / "objects" / "Xy" / "Zw" / "MD5E-s1--0")
    elif kind.endswith("directory"):
        target.mkdir()
    else:
        os.mkfifo(target)
    (broken, fine) = find_runs(root)
    assert str(target) in broken.problem and message in broken.problem
    assert fine.problem is None


def test_a_folder_link_to_an_ancestor_is_not_followed(make_dataset, tmp_path, caplog):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    (root / "sub-01" / "func" / "loop").symlink_to("..")
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.layout"):
        (run,) = find_runs(root, database_dir=tmp_path / "db")
    assert run.problem is None and "loop" not in str(run.preproc_bold)
    assert "sub-01/func/loop: a link to a folder that contains it" in caplog.text


def test_subject_with_bold_only_in_other_spaces_is_not_listed_in_the_space(make_dataset):
    root = make_dataset(subjects=["01", "03"], runs=[1], t1w_space=True, **SMALL)
    for path in root.glob(f"sub-03/func/*space-{TPL}*"):
        path.unlink()
    with pytest.raises(NoRunsFoundError) as error:
        find_runs(root, participant_labels=["03"])
    message = str(error.value)
    assert f"Subjects with preprocessed BOLD in space {TPL}: 01." in message
    assert "only in other spaces: 03 (T1w)" in message
    assert "Participant(s) 03 have preprocessed BOLD only in other spaces" in message


def test_filter_values_are_checked(fmriprep_dataset):
    for value, message in [
        ({"$gt": 1}, "'run'"),
        (1.5, "fraction"),
        (True, "boolean"),
        (-1, "negative"),
        ([None, [1]], "'run'"),
    ]:
        with pytest.raises(QueryError, match=message):
            load_bids_filters({"bold": {"run": value}})
    assert load_bids_filters({"bold": {"run": [1, "2", None, "*"], "ses": 3}}) == {
        "run": ["1", "2", None, "*"],
        "session": ["3"],
    }
    with pytest.raises(NoRunsFoundError):  # null: runs without a run- entity, none here
        find_runs(fmriprep_dataset, bids_filters={"bold": {"run": None}})
    assert len(find_runs(fmriprep_dataset, bids_filters={"bold": {"run": "*"}})) == 4


def test_an_edited_sidecar_is_read_again_with_a_stored_index(make_dataset, tmp_path):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    database = tmp_path / "db"
    (run,) = find_runs(root, database_dir=database)
    assert run.t_r == 2.0
    run.sidecar.write_text(json.dumps({"RepetitionTime": 1.5, "TaskName": "rest"}))
    (again,) = find_runs(root, database_dir=database)
    assert again.t_r == 1.5
    assert len(list(database.glob("index-*/layout_index.sqlite"))) == 1  # same files: reused


def test_an_unusable_database_dir_falls_back_to_memory(make_dataset, tmp_path, caplog):
    root = make_dataset(subjects=["01"], runs=[1], **SMALL)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.layout"):
        (run,) = find_runs(root, database_dir=blocker / "db")
    assert run.problem is None
    assert "indexing in memory" in caplog.text and str(blocker) in caplog.text


def test_a_name_that_is_not_utf8_is_left_out_with_a_warning(make_dataset, tmp_path, caplog):
    root = make_dataset(subjects=["01"], runs=[1, 2], **SMALL)
    for path in sorted((root / "sub-01" / "func").glob("*run-1_*")):
        os.rename(os.fsencode(path), os.fsencode(path).replace(b"run-1_", b"run-1_acq-\xff_"))
    os.mkdir(os.fsencode(root) + b"/sub-\xfe")
    for database in (None, tmp_path / "db"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.layout"):
            assert _names(find_runs(root, database_dir=database)) == ["sub-01_task-rest_run-2"]
        assert "its name is not UTF-8" in caplog.text and "acq-\\udcff" in caplog.text
