"""Tests for the dataset layer's writers: names, atomic writes, dataset files, status tables."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bidsapp.dataset import (
    atlas_copy,
    dataset_description,
    fileio,
    jsonio,
    naming,
    run_outputs,
    status_tables,
    tsvio,
)

SPACE = "MNI152NLin2009cAsym"
ATLAS = "Toy2024"
PREFIX = f"space-{SPACE}_atlas-{ATLAS}"


def _context():
    """Fork where available (fast, no re-import); spawn elsewhere."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _run_together(target, arguments: list[tuple]) -> None:
    """Run ``target(*args, barrier)`` in one process per item, all released at once."""
    ctx = _context()
    barrier = ctx.Barrier(len(arguments))
    workers = [ctx.Process(target=target, args=(*args, barrier)) for args in arguments]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0


def _leftovers(directory: Path) -> list[str]:
    """Temporary files left behind anywhere under ``directory``."""
    return sorted(p.name for p in directory.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

BOLD = {"subject": "01", "task": "rest", "space": SPACE, "res": "2", "desc": "preproc"}
NAME_CASES = [
    pytest.param(BOLD, "sub-01/func", "sub-01_task-rest", "_res-2", id="no-session"),
    pytest.param(
        {**BOLD, "session": "pre"},
        "sub-01/ses-pre/func",
        "sub-01_ses-pre_task-rest",
        "_res-2",
        id="session",
    ),
    pytest.param(
        {**BOLD, "acquisition": "mb4", "run": 2, "echo": 1},
        "sub-01/func",
        "sub-01_task-rest_acq-mb4_run-2_echo-1",
        "_res-2",
        id="acq-run-echo",
    ),
    pytest.param(
        {
            **BOLD,
            "session": "1",
            "acquisition": "hi",
            "ceagent": "gad",
            "reconstruction": "moco",
            "direction": "AP",
            "run": "01",
            "echo": 3,
            "part": "mag",
            "den": "91k",
            "suffix": "bold",
            "extension": ".nii.gz",
            "datatype": "func",
        },
        "sub-01/ses-1/func",
        "sub-01_ses-1_task-rest_acq-hi_ce-gad_rec-moco_dir-AP_run-01_echo-3_part-mag",
        "_res-2_den-91k",
        id="all-entities-in-bids-order",
    ),
]


@pytest.mark.parametrize(("entities", "directory", "run_prefix", "grid"), NAME_CASES)
def test_output_paths_names(tmp_path, entities, directory, run_prefix, grid):
    paths = run_outputs.output_paths(
        tmp_path, entities, atlas=ATLAS, strategy="mean", denoise="simple"
    )
    base = tmp_path / directory
    assert paths.directory == base
    stem = f"{run_prefix}_{PREFIX}{grid}"
    assert paths.timeseries == base / f"{stem}_stat-mean_desc-simple_timeseries.tsv"
    assert paths.timeseries_json == base / f"{stem}_stat-mean_desc-simple_timeseries.json"
    assert paths.coverage == base / f"{stem}_stat-coverage_bold.tsv"
    assert paths.coverage_json == base / f"{stem}_stat-coverage_bold.json"
    assert paths.relmat == base / f"{stem}_stat-pearsoncorrelation_desc-simple_relmat.tsv"
    assert paths.relmat_json == base / f"{stem}_stat-pearsoncorrelation_desc-simple_relmat.json"
    # The BOLD's desc never reaches an output name (res and den do: they tell runs apart).
    for path in paths.all():
        assert "preproc" not in path.name


def test_output_paths_keeps_padded_run_and_labels_strategy(tmp_path):
    from bids.layout.utils import PaddedInt

    entities = {**BOLD, "run": PaddedInt("01")}
    paths = run_outputs.output_paths(
        tmp_path, entities, atlas=ATLAS, strategy="standard_deviation", denoise="scrubbing"
    )
    assert paths.timeseries.name == (
        f"sub-01_task-rest_run-01_{PREFIX}_res-2_stat-standardDeviation_desc-scrubbing_"
        "timeseries.tsv"
    )
    assert len(set(paths.all())) == 9


def test_bids_name_orders_entities_whatever_the_dict_order():
    entities = {
        "desc": "x",
        "stat": "mean",
        "atlas": "A",
        "space": "S",
        "task": "t",
        "subject": "1",
    }
    name = naming.bids_name(entities, suffix="timeseries", extension=".tsv")
    assert name == "sub-1_task-t_space-S_atlas-A_stat-mean_desc-x_timeseries.tsv"
    tpl = naming.bids_name(
        {"atlas": "A", "res": "2", "template": "MNI"}, suffix="dseg", extension=".nii.gz"
    )
    assert tpl == "tpl-MNI_atlas-A_res-2_dseg.nii.gz"


@pytest.mark.parametrize(
    ("entities", "match"),
    [
        ({"subject": "01_a", "task": "rest"}, "'subject'"),
        ({"subject": "01", "task": "rest-state"}, "'task'"),
        ({"subject": "01", "task": "rest", "acquisition": ""}, "'acquisition'"),
        ({"subject": "01", "task": "rest", "run": "1a"}, "'run'"),
        ({"subject": "01", "task": "rest", "echo": -1}, "'echo'"),
        ({"subject": "01", "task": "rest", "atlas": "Schaefer 400"}, "'atlas'"),
        ({"subject": "01", "task": "rest", "desc": "my_strategy"}, "'desc'"),
        ({"subject": "01", "task": "rest", "space": "MNI+cohort"}, "'space'"),
        ({"subject": True, "task": "rest"}, "'subject'"),
        ({"subject": "01", "sesion": "1"}, "Unknown BIDS entities"),
    ],
)
def test_bids_name_rejects_invalid_values(entities, match):
    with pytest.raises(ValueError, match=match):
        naming.bids_name(entities, suffix="bold", extension=".tsv")


def test_invalid_label_message_suggests_a_fix():
    with pytest.raises(ValueError, match="to_label\\(\\) would give 'Schaefer400'"):
        naming.check_label("Schaefer 400", entity="atlas")


@pytest.mark.parametrize(
    ("suffix", "extension"), [("time_series", ".tsv"), ("timeseries", "tsv"), ("bold", ".t-v")]
)
def test_bids_name_rejects_bad_suffix_or_extension(suffix, extension):
    with pytest.raises(ValueError):
        naming.bids_name({"subject": "01"}, suffix=suffix, extension=extension)


def test_output_paths_rejects_bad_input(tmp_path):
    kwargs = {"atlas": ATLAS, "strategy": "mean", "denoise": "simple"}
    with pytest.raises(ValueError, match="'roi'"):  # never dropped: it would merge two runs
        run_outputs.output_paths(tmp_path, {**BOLD, "roi": "1"}, **kwargs)
    with pytest.raises(ValueError, match="twice"):
        run_outputs.output_paths(tmp_path, {**BOLD, "resolution": "1"}, **kwargs)
    with pytest.raises(ValueError, match="'space'"):
        run_outputs.output_paths(tmp_path, {"subject": "01", "task": "rest"}, **kwargs)
    with pytest.raises(ValueError, match="'task'"):
        run_outputs.output_paths(tmp_path, {"subject": "01", "space": SPACE}, **kwargs)
    with pytest.raises(ValueError, match="'desc'"):
        run_outputs.output_paths(tmp_path, BOLD, **{**kwargs, "denoise": "simple+gsr"})
    with pytest.raises(ValueError, match="'atlas'"):
        run_outputs.output_paths(tmp_path, BOLD, **{**kwargs, "atlas": "400Parcels 7Networks"})


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("400Parcels 7Networks", "400Parcels7Networks"),
        ("Schaefer2018:400Parcels7Networks", "Schaefer2018400Parcels7Networks"),
        ("standard_deviation", "standardDeviation"),
        ("  simple  ", "simple"),
        ("DiFuMo-256 dimensions", "DiFuMo256Dimensions"),
    ],
)
def test_to_label(text, label):
    assert naming.to_label(text) == label
    assert naming.check_label(label) == label


def test_to_label_rejects_text_without_letters_or_digits():
    with pytest.raises(ValueError, match="no letter or digit"):
        naming.to_label("_-_ ")


def test_bids_uri(tmp_path):
    bold = tmp_path / "fmriprep" / "sub-01" / "func" / "x_bold.nii.gz"
    uri = naming.bids_uri(bold, root=tmp_path / "fmriprep", dataset="preprocessed")
    assert uri == "bids:preprocessed:sub-01/func/x_bold.nii.gz"
    with pytest.raises(ValueError, match="not inside"):
        naming.bids_uri(tmp_path / "elsewhere.nii.gz", root=tmp_path / "fmriprep", dataset="p")


def test_bids_uri_through_a_symbolic_link(tmp_path):
    real = tmp_path / "real"
    (real / "sub-01").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    uri = naming.bids_uri(real / "sub-01" / "x.tsv", root=tmp_path / "link", dataset="d")
    assert uri == "bids:d:sub-01/x.tsv"


def test_entity_order_follows_the_bids_schema():
    schema_mod = pytest.importorskip("bidsschematools.schema")
    schema = schema_mod.load_schema()
    long_names = {"res": "resolution", "den": "density", "desc": "description"}
    ours = [long_names.get(n, n) for n, _ in naming.ENTITY_ORDER if n != "stat"]
    order = list(schema.rules.entities)
    positions = [order.index(name) for name in ours]
    assert positions == sorted(positions), "entity order differs from the BIDS schema"
    for name, key in naming.ENTITY_ORDER:
        if name != "stat":
            assert schema.objects.entities[long_names.get(name, name)].name == key
    assert "stat" not in {e.name for e in schema.objects.entities.values()}


def test_bids_version_is_not_newer_than_the_installed_schema():
    schema_mod = pytest.importorskip("bidsschematools.schema")
    installed = schema_mod.load_schema().bids_version

    def as_tuple(version: str) -> tuple[int, ...]:
        return tuple(int(p) for p in version.split(".")[:3])

    assert as_tuple(dataset_description.BIDS_VERSION) <= as_tuple(installed)
    assert as_tuple(dataset_description.BIDS_VERSION) >= (
        1,
        11,
        0,
    )  # first BIDS with the atlas entity


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def test_atomic_write_text_leaves_only_the_target(tmp_path):
    target = tmp_path / "deep" / "dir" / "file.txt"
    assert fileio.atomic_write_text(target, "héllo\n") == target
    assert target.read_bytes() == "héllo\n".encode()
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = fileio.atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def _failing_fsync(fd):
    raise OSError(28, "No space left on device (simulated)")


def test_failed_write_leaves_no_temp_and_no_target(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio.os, "fsync", _failing_fsync)
    target = tmp_path / "out.tsv"
    with pytest.raises(OSError, match="simulated"):
        tsvio.atomic_write_tsv(target, pd.DataFrame({"a": [1.0, 2.0]}))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = jsonio.atomic_write_json(tmp_path / "side.json", {"version": 1})
    monkeypatch.setattr(fileio.os, "fsync", _failing_fsync)
    with pytest.raises(OSError, match="simulated"):
        jsonio.atomic_write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["side.json"]


def test_interrupted_write_cleans_up(tmp_path, monkeypatch):
    def interrupt(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write_text(tmp_path / "x.txt", "data")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_json_converts_numpy_and_rejects_nan(tmp_path):
    path = jsonio.atomic_write_json(
        tmp_path / "a.json",
        {"n": np.int64(3), "x": np.float32(0.5), "v": np.arange(3), "p": tmp_path, "t": (1, 2)},
    )
    assert json.loads(path.read_text()) == {
        "n": 3,
        "x": 0.5,
        "v": [0, 1, 2],
        "p": str(tmp_path),
        "t": [1, 2],
    }
    with pytest.raises(ValueError, match="b.json"):
        jsonio.atomic_write_json(tmp_path / "b.json", {"x": float("nan")})
    with pytest.raises(TypeError, match="c.json"):
        jsonio.atomic_write_json(tmp_path / "c.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def _extreme_floats(n_rows: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    values = rng.standard_normal((n_rows, 4)) * 10.0 ** rng.integers(-300, 300, (n_rows, 4))
    values[0] = [0.1 + 0.2, 1 / 3, 5e-324, -0.0]
    values[1, 2] = np.nan
    return pd.DataFrame(values, columns=["Region A", 'quote"d', "7Networks_LH_Vis_1", "x"])


def test_tsv_round_trip_keeps_float64_and_na(tmp_path):
    df = _extreme_floats()
    path = tsvio.atomic_write_tsv(tmp_path / "t.tsv", df)
    text = path.read_text()
    lines = text.split("\n")
    assert lines[0] == 'Region A\tquote"d\t7Networks_LH_Vis_1\tx'  # no quoting, no index
    assert lines[2].split("\t")[2] == "n/a"
    assert text.endswith("\n") and "\r" not in text
    back = tsvio.read_tsv(path)
    assert list(back.columns) == list(df.columns)
    assert back.dtypes.eq(np.float64).all()
    np.testing.assert_array_equal(back.to_numpy(), df.to_numpy())  # bit-exact, NaN == NaN
    assert np.signbit(back.iloc[0, 3])


def test_ten_significant_digits_would_not_round_trip(tmp_path):
    # Why the default is repr-style: "%.10g" changes most float64 values.
    df = _extreme_floats()
    path = tsvio.atomic_write_tsv(tmp_path / "short.tsv", df, float_format="%.10g")
    back = tsvio.read_tsv(path).to_numpy()
    exact = back == df.to_numpy()
    assert exact.mean() < 0.1
    np.testing.assert_allclose(back, df.to_numpy(), rtol=1e-9)


def test_tsv_with_index_and_text(tmp_path):
    df = pd.DataFrame({"name": ["a b", None], "v": [1, 2]}, index=pd.Index(["r1", "r2"], name="id"))
    path = tsvio.atomic_write_tsv(tmp_path / "i.tsv", df, index=True)
    assert path.read_text() == "id\tname\tv\nr1\ta b\t1\nr2\tn/a\t2\n"


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame({"a\tb": [1.0]}),
        pd.DataFrame({"name": ["line\nbreak"]}),
        pd.DataFrame({"name": ["tab\there"]}),
        pd.DataFrame([[1.0, 2.0]], columns=["Vis", "Vis"]),
    ],
)
def test_tsv_rejects_tabs_and_newlines(tmp_path, df):
    with pytest.raises(ValueError, match="bad.tsv"):
        tsvio.atomic_write_tsv(tmp_path / "bad.tsv", df)
    assert list(tmp_path.iterdir()) == []


def test_read_sidecar(tmp_path):
    assert jsonio.read_sidecar(tmp_path / "missing.json") is None
    (tmp_path / "broken.json").write_text('{"a": 1')
    assert jsonio.read_sidecar(tmp_path / "broken.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert jsonio.read_sidecar(tmp_path / "list.json") is None
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert jsonio.read_sidecar(tmp_path / "binary.json") is None
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert jsonio.read_sidecar(tmp_path / "ok.json") == {"a": [1, 2]}


# ---------------------------------------------------------------------------------------------
# Per-run outputs
# ---------------------------------------------------------------------------------------------

REGIONS = ["Vis 1", "Vis 2", "SomMot 1"]


def _run_data(seed: int = 0, n_volumes: int = 12):
    rng = np.random.default_rng(seed)
    timeseries = pd.DataFrame(rng.standard_normal((n_volumes, len(REGIONS))), columns=REGIONS)
    timeseries["SomMot 1"] = np.nan  # a region below the coverage threshold
    coverage = pd.Series([1.0, 0.75, 0.25], index=REGIONS)
    relmat = timeseries.corr()
    return timeseries, coverage, relmat


#: Volumes of the run behind :func:`_run_data` (12 kept) and the two it censored.
N_VOLUMES, CENSORED = 14, (0, 7)


def _design(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 100)
    return pd.DataFrame(rng.standard_normal((N_VOLUMES, 3)), columns=["csf", "rot_x", "trans_x"])


def _write_run(paths, parameters, seed=0, **overrides):
    timeseries, coverage, relmat = _run_data(seed)
    kwargs = {
        "design": _design(seed),
        "outliers": run_outputs.outliers_table(N_VOLUMES, CENSORED),
        "outliers_sidecar": {"outlier": {"Levels": {"0": "kept", "1": "censored"}}},
        "timeseries": timeseries,
        "timeseries_sidecar": {"Parameters": parameters, "SamplingFrequency": 0.5},
        "coverage": coverage,
        "coverage_sidecar": {"coverage": {"Description": "Fraction of voxels in the mask."}},
        "relmat": relmat,
        "relmat_sidecar": {
            **run_outputs.relmat_metadata(["bids:atlases:x"]),
            "Parameters": parameters,
        },
    }
    return run_outputs.write_run_outputs(paths, **{**kwargs, **overrides})


@pytest.fixture
def run_paths(tmp_path):
    return run_outputs.output_paths(
        tmp_path / "out", BOLD, atlas=ATLAS, strategy="mean", denoise="simple"
    )


def test_write_run_outputs_content(run_paths):
    written = _write_run(run_paths, {"fd": 0.5})
    assert written == run_paths.all()
    assert written[-1] == run_paths.timeseries  # the completion marker comes last
    coverage = tsvio.read_tsv(run_paths.coverage)
    assert list(coverage.columns) == ["Node", "coverage"]
    assert coverage["Node"].tolist() == REGIONS
    relmat = tsvio.read_tsv(run_paths.relmat)
    assert list(relmat.columns) == ["Node", *REGIONS]
    assert relmat["Node"].tolist() == REGIONS
    assert relmat.iloc[0, 1] == 1.0 and np.isnan(relmat.iloc[0, 3])
    sidecar = jsonio.read_sidecar(run_paths.relmat_json)
    assert sidecar["RelationshipMeasure"] == "Pearson correlation coefficient"
    assert (sidecar["Weighted"], sidecar["Directed"], sidecar["ValidDiagonal"]) == (
        True,
        False,
        False,
    )
    assert sidecar["StorageFormat"] == "Full" and sidecar["NodeFiles"] == ["bids:atlases:x"]
    timeseries = tsvio.read_tsv(run_paths.timeseries)
    assert list(timeseries.columns) == REGIONS and timeseries["SomMot 1"].isna().all()
    np.testing.assert_array_equal(timeseries.to_numpy(), _run_data(0)[0].to_numpy())
    np.testing.assert_array_equal(relmat.iloc[:, 1:].to_numpy(), _run_data(0)[2].to_numpy())
    assert run_paths.timeseries.read_text().split("\n")[1].endswith("\tn/a")


def test_design_and_outliers_are_members_of_the_set(run_paths):
    _write_run(run_paths, {"fd": 0.5})
    design = tsvio.read_tsv(run_paths.design)
    np.testing.assert_allclose(design.to_numpy(), _design(0).to_numpy(), rtol=1e-12)
    assert list(design.columns) == ["csf", "rot_x", "trans_x"]
    outliers = tsvio.read_tsv(run_paths.outliers)
    assert list(outliers.columns) == ["outlier"]
    assert np.flatnonzero(outliers["outlier"].to_numpy()).tolist() == list(CENSORED)
    assert len(outliers) == N_VOLUMES
    assert jsonio.read_sidecar(run_paths.outliers_json)["outlier"]["Levels"]["1"] == "censored"
    members = jsonio.read_sidecar(run_paths.timeseries_json)[run_outputs.OUTPUT_FILES_KEY]
    for path in run_paths.shared():
        assert members[path.name] == fileio.sha256_digest(path.read_bytes())
    # Names: the run's entities and the denoising label, no atlas or statistic.
    assert run_paths.design.name == f"sub-01_task-rest_space-{SPACE}_res-2_desc-simple_design.tsv"
    assert "atlas-" not in run_paths.outliers.name and "stat-" not in run_paths.outliers.name
    assert run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5}})


@pytest.mark.parametrize("member", ["design", "outliers", "outliers_json"])
def test_a_changed_or_missing_shared_file_makes_the_set_incomplete(run_paths, member):
    _write_run(run_paths, {"fd": 0.5})
    path = getattr(run_paths, member)
    path.write_text(path.read_text().replace("1", "0", 1))
    assert not run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5}})
    path.unlink()
    assert not run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5}})


def test_no_design_removes_a_stale_one(run_paths):
    _write_run(run_paths, {"fd": 0.5})
    _write_run(run_paths, {"fd": 0.5}, design=None)
    assert not run_paths.design.exists() and run_paths.outliers.exists()
    members = jsonio.read_sidecar(run_paths.timeseries_json)[run_outputs.OUTPUT_FILES_KEY]
    assert run_paths.design.name not in members
    assert run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5}})


def test_design_rows_must_be_the_volumes(run_paths):
    with pytest.raises(ValueError, match="13 rows for 14 volumes"):
        _write_run(run_paths, {"fd": 0.5}, design=_design(0).iloc[:13])
    assert not run_paths.timeseries.exists()


def test_outliers_table_refuses_a_volume_outside_the_run():
    assert run_outputs.outliers_table(3, [2])["outlier"].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="outside a run of 3 volumes"):
        run_outputs.outliers_table(3, [3])


def test_removal_can_keep_the_files_the_atlases_share(run_paths):
    _write_run(run_paths, {"fd": 0.5})
    removed = run_outputs.remove_run_outputs(run_paths, keep_shared=True)
    assert set(removed.removed) == set(run_paths.all()) - set(run_paths.shared())
    assert all(p.exists() for p in run_paths.shared())
    removed = run_outputs.remove_run_outputs(run_paths)
    assert set(removed.removed) == set(run_paths.shared())


def test_write_order_puts_timeseries_tsv_last(run_paths, monkeypatch):
    run_paths.directory.mkdir(parents=True)
    run_paths.timeseries.write_text("old\n")
    events = []
    real_write = fileio.atomic_write_text

    def record(path, text, **kwargs):
        events.append(("write", Path(path), Path(run_paths.timeseries).exists()))
        return real_write(path, text, **kwargs)

    monkeypatch.setattr(run_outputs, "atomic_write_text", record)
    _write_run(run_paths, {"fd": 0.5})
    assert [e[1] for e in events] == run_paths.all()
    # The old marker was removed before the first write, so no new file sat beside it.
    assert not any(exists for _, _, exists in events)


def test_outputs_complete_tracks_parameters(run_paths):
    assert not run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5}})
    _write_run(run_paths, {"fd": 0.5, "atlas": ("a", "b")})
    assert run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5, "atlas": ["a", "b"]}})
    assert run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5, "atlas": ("a", "b")}})
    assert not run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.2, "atlas": ["a"]}})
    assert not run_outputs.outputs_complete(run_paths, {"Missing": 1})


def test_crash_during_rerun_is_never_complete(run_paths, monkeypatch):
    _write_run(run_paths, {"fd": 0.5})
    real_write = fileio.atomic_write_text

    def crash_on_timeseries(path, text, **kwargs):
        if Path(path) == run_paths.timeseries:
            raise OSError("killed (simulated)")
        return real_write(path, text, **kwargs)

    monkeypatch.setattr(run_outputs, "atomic_write_text", crash_on_timeseries)
    with pytest.raises(OSError, match="simulated"):
        _write_run(run_paths, {"fd": 0.2}, seed=1)
    # The new sidecar is on disk, but without its TSV neither parameter set counts as done.
    assert jsonio.read_sidecar(run_paths.timeseries_json)["Parameters"] == {"fd": 0.2}
    assert not run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.2}})
    assert not run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5}})


def test_bad_input_does_not_touch_finished_outputs(run_paths):
    _write_run(run_paths, {"fd": 0.5})
    before = {p: p.read_bytes() for p in run_paths.all()}
    wrong = pd.Series([1.0, 1.0, 1.0], index=["Vis 2", "Vis 1", "SomMot 1"])
    with pytest.raises(ValueError, match="Coverage regions"):
        _write_run(run_paths, {"fd": 0.2}, coverage=wrong)
    with pytest.raises(ValueError, match="relmat"):
        _write_run(run_paths, {"fd": 0.2}, relmat=pd.DataFrame(np.eye(2)))
    assert {p: p.read_bytes() for p in run_paths.all()} == before
    assert run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.5}})


def test_default_coverage_and_relmat_sidecars(run_paths):
    _write_run(run_paths, {"fd": 0.5}, coverage_sidecar=None, relmat_sidecar=None)
    coverage = jsonio.read_sidecar(run_paths.coverage_json)
    assert set(coverage) == {"Node", "coverage"}
    relmat = jsonio.read_sidecar(run_paths.relmat_json)
    assert relmat == run_outputs.relmat_metadata()
    assert "NodeFiles" not in relmat and relmat["StorageFormat"] == "Full"


def test_output_paths_accepts_positional_arguments(tmp_path):
    by_keyword = run_outputs.output_paths(
        tmp_path, BOLD, atlas=ATLAS, strategy="median", denoise="simple"
    )
    assert run_outputs.output_paths(tmp_path, BOLD, ATLAS, "median", "simple") == by_keyword


def test_run_without_relmat_removes_a_stale_one(run_paths):
    _write_run(run_paths, {"fd": 0.5})
    assert run_paths.relmat.exists()
    written = _write_run(run_paths, {"fd": 0.2}, relmat=None, relmat_sidecar=None)
    assert run_paths.relmat not in written
    assert not run_paths.relmat.exists() and not run_paths.relmat_json.exists()
    assert run_outputs.outputs_complete(run_paths, {"Parameters": {"fd": 0.2}})


# ---------------------------------------------------------------------------------------------
# dataset_description.json and .bidsignore
# ---------------------------------------------------------------------------------------------


def _describe(output_dir, version="0.1.0", source_dir="/data/fmriprep"):
    return dataset_description.write_dataset_description(
        output_dir,
        name="bidsapp parcel timeseries",
        version=version,
        source_dir=source_dir,
        container={"Type": "docker", "Tag": f"bidsapp/bidsapp:{version}"},
    )


def test_dataset_description_content(tmp_path):
    path = _describe(tmp_path / "out", source_dir=tmp_path / "fmriprep")
    description = json.loads(path.read_text())
    source_uri = (tmp_path / "fmriprep").as_uri()
    assert description["BIDSVersion"] == dataset_description.BIDS_VERSION
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"] == [
        {
            "Name": "bidsapp",
            "Version": "0.1.0",
            "Container": {"Type": "docker", "Tag": "bidsapp/bidsapp:0.1.0"},
        }
    ]
    assert description["SourceDatasets"] == [{"URL": source_uri}]
    assert description["DatasetLinks"] == {
        "preprocessed": source_uri,
        "atlases": "sourcedata/atlases",
    }
    container = "docker://ghcr.io/bidsapp/bidsapp:0.1.0"
    other = tmp_path / "other"
    dataset_description.write_dataset_description(
        other, version="0.1.0", source_dir=tmp_path, container=container
    )
    description = json.loads((other / "dataset_description.json").read_text())
    assert description["Name"] == "bidsapp parcel timeseries"
    assert description["GeneratedBy"][0]["Container"] == {
        "Type": "docker",
        "Tag": "ghcr.io/bidsapp/bidsapp:0.1.0",
        "URI": container,
    }
    with pytest.raises(ValueError, match="docker://"):
        dataset_description.write_dataset_description(
            other, version="0.1.0", source_dir=tmp_path, container="bidsapp:latest"
        )
    with pytest.raises(ValueError, match="Container keys"):
        dataset_description.write_dataset_description(
            tmp_path, name="x", version="1", source_dir=tmp_path, container={"Image": "x"}
        )


def test_dataset_description_identical_content_is_not_rewritten(tmp_path, caplog):
    path = _describe(tmp_path)
    before = path.stat()
    _describe(tmp_path)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.dataset_description"):
        _describe(tmp_path, version="0.2.0")
    assert json.loads(path.read_text())["GeneratedBy"][0]["Version"] == "0.2.0"
    assert "GeneratedBy" in caplog.text


def _describe_many_times(output_dir, version, n_writes, barrier):
    barrier.wait()
    for _ in range(n_writes):
        _describe(Path(output_dir), version=version)


def test_concurrent_dataset_description_writers(tmp_path):
    ctx = _context()
    n_processes = 8
    barrier = ctx.Barrier(n_processes + 1)  # the parent starts reading with the writers
    # Two different versions make every call a real replace (identical ones would be skipped).
    workers = [
        ctx.Process(target=_describe_many_times, args=(str(tmp_path), f"0.{i % 2}.0", 25, barrier))
        for i in range(n_processes)
    ]
    for worker in workers:
        worker.start()
    barrier.wait()
    reads = 0
    while any(w.is_alive() for w in workers):
        path = tmp_path / "dataset_description.json"
        if path.exists():
            description = json.loads(path.read_text())  # never a half-written file
            assert description["DatasetType"] == "derivative"
            reads += 1
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    description = json.loads((tmp_path / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Version"] in {"0.0.0", "0.1.0"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_description.json"]
    assert reads > 0


def test_concurrent_identical_writers_leave_one_file(tmp_path):
    _run_together(_describe_many_times, [(str(tmp_path), "1.0.0", 5)] * 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_description.json"]
    assert json.loads((tmp_path / "dataset_description.json").read_text())["Name"]


def test_bidsignore_merges_and_is_idempotent(tmp_path):
    (tmp_path / ".bidsignore").write_text("# mine\nextra/\n*_timeseries.*\n")
    path = dataset_description.write_bidsignore(tmp_path)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["# mine", "extra/", "*_timeseries.*"]
    assert sorted(lines[3:]) == sorted(
        set(dataset_description.BIDSIGNORE_PATTERNS) - {"*_timeseries.*"}
    )
    before = path.stat()
    dataset_description.write_bidsignore(tmp_path)
    assert path.stat().st_ino == before.st_ino
    assert path.read_text().splitlines() == lines


def test_a_first_bidsignore_write_lists_the_one_pattern_list_in_order(tmp_path):
    # The participant level, the group level and the report all write this same list.
    path = dataset_description.write_bidsignore(tmp_path)
    assert path.read_text() == "".join(f"{p}\n" for p in dataset_description.BIDSIGNORE_PATTERNS)


def _add_pattern(output_dir, pattern, barrier):
    barrier.wait()
    dataset_description.write_bidsignore(
        Path(output_dir), [*dataset_description.BIDSIGNORE_PATTERNS, pattern]
    )


def test_concurrent_bidsignore_writers_lose_no_pattern(tmp_path):
    _run_together(_add_pattern, [(str(tmp_path), f"extra{i}/") for i in range(8)])
    lines = (tmp_path / ".bidsignore").read_text().splitlines()
    assert sorted(lines) == sorted(
        [*dataset_description.BIDSIGNORE_PATTERNS, *(f"extra{i}/" for i in range(8))]
    )


# ---------------------------------------------------------------------------------------------
# Atlas dataset
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyAtlas:
    label: str
    space: str
    dseg: Path
    lut: pd.DataFrame
    lut_path: Path | None = None


def _toy_atlas(directory: Path, *, shift: int = 0, label: str = ATLAS) -> ToyAtlas:
    """A real 3D integer atlas with three regions and its LUT."""
    directory.mkdir(parents=True, exist_ok=True)
    data = np.zeros((6, 6, 6), dtype=np.int16)
    data[:2] = 1
    data[2:4] = 2
    data[4:, : 3 + shift] = 3
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-6.0, -6.0, -6.0]
    img = nb.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=4)
    img.set_sform(affine, code=4)
    dseg = directory / f"tpl-{SPACE}_atlas-{label}_dseg.nii.gz"
    nb.save(img, dseg)
    lut = pd.DataFrame({"index": [1, 2, 3], "name": REGIONS, "network": ["Vis", "Vis", "SomMot"]})
    lut_path = directory / f"tpl-{SPACE}_atlas-{label}_dseg.tsv"
    lut.to_csv(lut_path, sep="\t", index=False)
    return ToyAtlas(label=label, space=SPACE, dseg=dseg, lut=lut, lut_path=lut_path)


def test_copy_atlas_layout_and_idempotence(tmp_path):
    atlas = _toy_atlas(tmp_path / "src")
    out = tmp_path / "out"
    files = atlas_copy.copy_atlas(out, atlas)
    root = out / "sourcedata" / "atlases"
    assert files.image == root / f"tpl-{SPACE}" / f"tpl-{SPACE}_atlas-{ATLAS}_dseg.nii.gz"
    assert files.lut == files.image.with_name(f"tpl-{SPACE}_atlas-{ATLAS}_dseg.tsv")
    assert files.sidecar == files.image.with_name(f"tpl-{SPACE}_atlas-{ATLAS}_dseg.json")
    assert files.description == root / f"atlas-{ATLAS}_description.json"
    assert files.image.read_bytes() == atlas.dseg.read_bytes()
    lut = tsvio.read_tsv(files.lut)
    assert list(lut.columns) == ["index", "name", "network"] and lut["name"].tolist() == REGIONS
    sidecar = json.loads(files.sidecar.read_text())
    assert set(sidecar) == {"Description", "Sources", "network"}
    assert sidecar["Sources"] == [atlas.dseg.as_uri(), atlas.lut_path.as_uri()]
    description = json.loads(files.description.read_text())
    assert description["AtlasName"] == ATLAS and description["License"]
    assert json.loads((root / "dataset_description.json").read_text())["DatasetType"] == (
        "derivative"
    )
    assert files.node_files == [
        f"bids:atlases:tpl-{SPACE}/tpl-{SPACE}_atlas-{ATLAS}_dseg.nii.gz",
        f"bids:atlases:tpl-{SPACE}/tpl-{SPACE}_atlas-{ATLAS}_dseg.tsv",
    ]

    def identities():  # inode and mtime change on any rewrite; atime does on mere reads
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}

    before = identities()
    assert atlas_copy.copy_atlas(out, atlas) == files
    assert identities() == before
    assert _leftovers(out) == []


def test_copy_atlas_refuses_a_different_atlas_with_the_same_name(tmp_path):
    out = tmp_path / "out"
    files = atlas_copy.copy_atlas(out, _toy_atlas(tmp_path / "a"))
    other = _toy_atlas(tmp_path / "b", shift=2)
    with pytest.raises(FileExistsError, match="different image"):
        atlas_copy.copy_atlas(out, other)
    atlas_copy.copy_atlas(out, other, overwrite=True)
    assert files.image.read_bytes() == other.dseg.read_bytes()
    other.lut = other.lut.assign(name=["a", "b", "c"])
    with pytest.raises(FileExistsError, match="different LUT"):
        atlas_copy.copy_atlas(out, other)


def test_copy_atlas_with_resolution_and_metadata(tmp_path):
    atlas = _toy_atlas(tmp_path / "src")
    atlas.res = "2"
    atlas.metadata = {"License": "CC-BY-4.0", "Authors": ["A. Author"]}
    files = atlas_copy.copy_atlas(tmp_path / "out", atlas)
    assert files.image.name == f"tpl-{SPACE}_atlas-{ATLAS}_res-2_dseg.nii.gz"
    description = json.loads(files.description.read_text())
    assert description == {"AtlasName": ATLAS, "License": "CC-BY-4.0", "Authors": ["A. Author"]}


def test_copy_atlas_rejects_bad_input(tmp_path):
    atlas = _toy_atlas(tmp_path / "src")
    bad_lut = ToyAtlas(ATLAS, SPACE, atlas.dseg, atlas.lut.drop(columns="name"))
    with pytest.raises(ValueError, match="'name'"):
        atlas_copy.copy_atlas(tmp_path / "out", bad_lut)
    not_nifti = ToyAtlas(ATLAS, SPACE, atlas.lut_path, atlas.lut)
    with pytest.raises(ValueError, match="not a NIfTI"):
        atlas_copy.copy_atlas(tmp_path / "out", not_nifti)
    with pytest.raises(ValueError, match="'atlas'"):
        atlas_copy.copy_atlas(tmp_path / "out", ToyAtlas("Toy 2024", SPACE, atlas.dseg, atlas.lut))
    missing = ToyAtlas(ATLAS, SPACE, tmp_path / "nope_dseg.nii.gz", atlas.lut)
    with pytest.raises(FileNotFoundError, match="nope_dseg"):
        atlas_copy.copy_atlas(tmp_path / "out", missing)


# ---------------------------------------------------------------------------------------------
# Run status records
# ---------------------------------------------------------------------------------------------


def _status_row(run="1", status="ok", **extra):
    row = {
        "subject": "01",
        "task": "rest",
        "run": run,
        "space": SPACE,
        "atlas": ATLAS,
        "denoise": "simple",
        "status": status,
        "reason": None,
        "stat": "mean",
        "volumes_total": 120,
        "volumes_kept": 110,
        "mean_fd": 0.123456789012345,
        "regions_below_coverage": 1,
        "outputs": ["sub-01/func/a_timeseries.tsv", "sub-01/func/a_relmat.tsv"],
    }
    return {**row, **extra}


def test_status_merge_updates_only_the_rerun_row(tmp_path):
    path = status_tables.write_subject_status(
        tmp_path, "01", [_status_row("01"), _status_row("02", status="failed", reason="no mask")]
    )
    assert path == tmp_path / "logs" / "sub-01_status.tsv"
    status_tables.write_subject_status(
        tmp_path, "01", [_status_row("02", volumes_kept=100, reason=None)]
    )
    table = status_tables.read_subject_status(tmp_path, "01")
    assert list(table.columns) == list(status_tables.STATUS_COLUMNS)
    assert table["run"].tolist() == ["01", "02"]  # text: the padding survives
    assert table["status"].tolist() == ["ok", "ok"]
    assert table["volumes_kept"].tolist() == [110, 100]
    assert str(table["volumes_total"].dtype) == "Int64"
    assert table["mean_fd"].iloc[0] == 0.123456789012345
    assert table["reason"].isna().all()
    assert table["session"].isna().all()
    assert table["outputs"].iloc[0] == "sub-01/func/a_timeseries.tsv;sub-01/func/a_relmat.tsv"


def test_status_key_includes_atlas_stat_and_denoise(tmp_path):
    status_tables.write_subject_status(
        tmp_path,
        "01",
        [
            _status_row(),
            _status_row(atlas="Other"),
            _status_row(denoise="scrubbing"),
            _status_row(stat="median"),
            _status_row(session="2"),
        ],
    )
    assert len(status_tables.read_subject_status(tmp_path, "01")) == 5


def test_status_keeps_extra_columns_and_drops_bold_only_entities(tmp_path):
    row = _status_row(run_name="sub-01_task-rest_run-1", res="2", desc="preproc", suffix="bold")
    status_tables.write_subject_status(tmp_path, "01", [row])
    table = status_tables.read_subject_status(tmp_path, "01")
    assert list(table.columns) == [*status_tables.STATUS_COLUMNS, "run_name"]
    assert table["run_name"].tolist() == ["sub-01_task-rest_run-1"]


def test_status_outputs_are_stored_relative_to_the_dataset(tmp_path):
    absolute = tmp_path / "sub-01" / "func" / "x_timeseries.tsv"
    status_tables.write_subject_status(tmp_path, "01", [_status_row(outputs=[absolute])])
    assert status_tables.read_subject_status(tmp_path, "01")["outputs"].iloc[0] == (
        "sub-01/func/x_timeseries.tsv"
    )


def test_status_rejects_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="Status must be"):
        status_tables.write_subject_status(tmp_path, "01", [_status_row(status="done")])
    with pytest.raises(ValueError, match="sub-01"):
        status_tables.write_subject_status(tmp_path, "01", [_status_row(subject="02")])
    with pytest.raises(ValueError, match="'atlas'"):
        status_tables.write_subject_status(tmp_path, "01", [_status_row(atlas=None)])
    with pytest.raises(ValueError, match="'subject'"):
        status_tables.write_subject_status(tmp_path, "0-1", [_status_row()])
    assert not (tmp_path / "logs" / "sub-01_status.tsv").exists()


def test_read_all_status(tmp_path):
    empty = status_tables.read_all_status(tmp_path)
    assert empty.empty and list(empty.columns) == list(status_tables.STATUS_COLUMNS)
    assert status_tables.read_subject_status(tmp_path, "09").empty
    status_tables.write_subject_status(tmp_path, "02", [_status_row(subject="02", session="1")])
    status_tables.write_subject_status(tmp_path, "01", [_status_row("1"), _status_row("2")])
    table = status_tables.read_all_status(tmp_path)
    assert table["subject"].tolist() == ["01", "01", "02"]
    assert table["session"].tolist()[2] == "1"
    assert table["volumes_total"].sum() == 360


def _write_status_row(output_dir, run, barrier):
    barrier.wait()
    status_tables.write_subject_status(Path(output_dir), "01", [_status_row(run=str(run))])


def test_concurrent_status_writers_lose_no_row(tmp_path):
    _run_together(_write_status_row, [(str(tmp_path), run) for run in range(1, 9)])
    table = status_tables.read_subject_status(tmp_path, "01")
    assert sorted(table["run"].astype(int)) == list(range(1, 9))
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# End to end: a complete small output dataset, read by pybids and the BIDS validator
# ---------------------------------------------------------------------------------------------

E2E_RUNS = [
    {"subject": "01", "task": "rest", "run": 1},
    {"subject": "01", "task": "rest", "run": 2},
    {"subject": "02", "session": "1", "task": "nback", "acquisition": "mb4", "direction": "PA"},
]


def _source_bold(source: Path, entities: dict) -> Path:
    """Create an (empty) fMRIPrep BOLD path so that BIDS URIs can be resolved."""
    name = naming.bids_name(
        {**entities, "space": SPACE, "res": "2", "desc": "preproc"},
        suffix="bold",
        extension=".nii.gz",
    )
    directory = source / f"sub-{entities['subject']}"
    if "session" in entities:
        directory = directory / f"ses-{entities['session']}"
    path = directory / "func" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


@pytest.fixture
def derivative_dataset(tmp_path):
    """Write a complete output dataset the way the workflow will."""
    source = tmp_path / "fmriprep"
    out = tmp_path / "out"
    atlas = _toy_atlas(tmp_path / "atlas_src")
    dataset_description.write_dataset_description(
        out, name="bidsapp parcel timeseries", version="0.1.0", source_dir=source
    )
    dataset_description.write_bidsignore(out)
    files = atlas_copy.copy_atlas(out, atlas)
    for seed, entities in enumerate(E2E_RUNS):
        bold = _source_bold(source, entities)
        run_entities = {**entities, "space": SPACE, "res": "2", "desc": "preproc"}
        paths = run_outputs.output_paths(
            out, run_entities, atlas=atlas.label, strategy="mean", denoise="simple"
        )
        timeseries, coverage, relmat = _run_data(seed)
        provenance = {"Sources": [naming.bids_uri(bold, root=source, dataset="preprocessed")]}
        run_outputs.write_run_outputs(
            paths,
            timeseries=timeseries,
            timeseries_sidecar={**provenance, "SamplingFrequency": 0.5},
            coverage=coverage,
            coverage_sidecar={**run_outputs.coverage_metadata(), **provenance},
            relmat=relmat,
            relmat_sidecar={**run_outputs.relmat_metadata(files.node_files), **provenance},
            design=_design(seed),
            outliers=run_outputs.outliers_table(N_VOLUMES, CENSORED),
            outliers_sidecar={"outlier": {"Levels": {"0": "kept", "1": "censored"}}},
        )
        status_tables.write_subject_status(
            out,
            entities["subject"],
            [
                {
                    **run_entities,
                    "suffix": "bold",
                    "extension": ".nii.gz",
                    "atlas": atlas.label,
                    "stat": "mean",
                    "denoise": "simple",
                    "status": "ok",
                    "outputs": paths.all(),
                }
            ],
        )
    return out


def _resolve_bids_uri(dataset: Path, uri: str) -> Path:
    """Resolve ``bids:<name>:<path>`` through the dataset's DatasetLinks."""
    _, name, relative = uri.split(":", 2)
    links = json.loads((dataset / "dataset_description.json").read_text())["DatasetLinks"]
    target = links[name]
    root = Path(unquote(urlparse(target).path)) if target.startswith("file:") else dataset / target
    return root / relative


def test_e2e_bids_uris_resolve(derivative_dataset):
    out = derivative_dataset
    sidecars = sorted(out.glob("sub-*/**/*_relmat.json"))
    assert len(sidecars) == 3
    for sidecar in sidecars:
        metadata = json.loads(sidecar.read_text())
        for uri in [*metadata["Sources"], *metadata["NodeFiles"]]:
            assert _resolve_bids_uri(out, uri).is_file(), uri
    status = status_tables.read_all_status(out)
    assert status["subject"].tolist() == ["01", "01", "02"]
    for cell in status["outputs"]:
        assert all((out / name).is_file() for name in cell.split(";"))
    assert {"desc", "suffix", "extension"}.isdisjoint(status.columns)
    assert set(status["res"]) == {"2"}  # res- names the outputs, so it keys the rows


def test_e2e_pybids_indexes_outputs(derivative_dataset):
    bids = pytest.importorskip("bids")
    layout = bids.BIDSLayout(derivative_dataset, validate=False)
    timeseries = layout.get(suffix="timeseries", extension=".tsv")
    assert len(timeseries) == 3
    entities = {f.filename: {k: str(v) for k, v in f.get_entities().items()} for f in timeseries}
    expected_sub02 = {
        "subject": "02",
        "session": "1",
        "task": "nback",
        "acquisition": "mb4",
        "direction": "PA",
        "space": SPACE,
        "atlas": ATLAS,
        "res": "2",
        "desc": "simple",
        "suffix": "timeseries",
        "extension": ".tsv",
        "datatype": "func",
    }
    name = (
        f"sub-02_ses-1_task-nback_acq-mb4_dir-PA_{PREFIX}_res-2_stat-mean_desc-simple_"
        "timeseries.tsv"
    )
    assert entities[name] == expected_sub02
    runs = sorted(e["run"] for e in entities.values() if e["subject"] == "01" and "run" in e)
    assert runs == ["1", "2"]
    assert all(e["res"] == "2" and "stat" not in e for e in entities.values())
    coverage = layout.get(suffix="bold", extension=".tsv", atlas=ATLAS)
    assert len(coverage) == 3 and all(f.filename.count("stat-coverage") for f in coverage)
    relmat = layout.get(suffix="relmat", extension=".tsv", desc="simple", atlas=ATLAS)
    assert len(relmat) == 3
    assert layout.get(suffix="dseg") == []  # sourcedata/ is not indexed


def _validator() -> str | None:
    found = shutil.which("bids-validator-deno")
    if found:
        return found
    candidate = Path(sys.executable).with_name("bids-validator-deno")
    return str(candidate) if candidate.exists() else None


def _validate(dataset: Path) -> tuple[int, dict]:
    executable = _validator()
    if executable is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    result = subprocess.run(
        [executable, "--format", "json", str(dataset)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode in (0, 16), result.stderr
    return result.returncode, json.loads(result.stdout)


def _errors(report: dict) -> list[str]:
    return [
        f"{i['code']} {i.get('location', '')}"
        for i in report["issues"]["issues"]
        if i["severity"] == "error"
    ]


def test_e2e_validator_accepts_the_dataset(derivative_dataset):
    code, report = _validate(derivative_dataset)
    assert _errors(report) == []
    assert code == 0
    # Everything under sub-*/ is bidsignored (no BIDS suffix exists for it); what remains
    # only lacks the optional README and Authors.
    warnings = {i["code"] for i in report["issues"]["issues"]}
    assert warnings <= {"README_FILE_MISSING", "TOO_FEW_AUTHORS"}


def test_e2e_validator_needs_the_bidsignore(derivative_dataset):
    (derivative_dataset / ".bidsignore").unlink()
    code, report = _validate(derivative_dataset)
    assert code == 16
    assert {e.split()[0] for e in _errors(report)} >= {"NOT_INCLUDED"}


def test_e2e_validator_accepts_the_atlas_dataset(derivative_dataset):
    code, report = _validate(derivative_dataset / "sourcedata" / "atlases")
    assert _errors(report) == []
    assert code == 0
    warnings = {i["code"] for i in report["issues"]["issues"]}
    # SpatialReference is only recommended; the LUT's extra 'network' column is described.
    expected = {"SUBJECT_FOLDERS", "README_FILE_MISSING", "TOO_FEW_AUTHORS"}
    assert warnings <= expected | {"SIDECAR_KEY_RECOMMENDED"}


def test_relmat_names_keep_extraction_statistics_apart(tmp_path):
    entities = {"subject": "01", "task": "rest", "space": "MNI152NLin2009cAsym"}
    mean = run_outputs.output_paths(tmp_path, entities, "A", "mean", "simple")
    median = run_outputs.output_paths(tmp_path, entities, "A", "median", "simple")
    assert mean.relmat.name.endswith("_stat-pearsoncorrelation_desc-simple_relmat.tsv")
    assert median.relmat.name.endswith("_stat-pearsoncorrelation_desc-simpleMedian_relmat.tsv")
    assert mean.relmat != median.relmat
