"""Connectivity measures against nilearn 0.12.1's ``ConnectivityMeasure``, and their outputs.

Each per-run measure equals nilearn's default ``ConnectivityMeasure(kind=...)`` (Ledoit-Wolf
covariance) on the same timeseries within ``ATOL``; regions without data get n/a rows and
columns and the others equal nilearn on the regions with data. The tangent reference equals
``ConnectivityMeasure(kind="tangent").fit(runs).mean_``. End to end, the CLI writes the files
and sidecars, the per-subject matrices equal the direct computation on the runs' TSVs
concatenated, and the group tangent file equals nilearn on the runs' TSVs.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from nilearn.connectome import ConnectivityMeasure
from support.cli_runs import LABEL, argv, run_cli, set_of

from bidsapp.app import config as app_config
from bidsapp.app import connectivity
from bidsapp.app.config import ConfigError, make_config
from bidsapp.dataset import run_outputs, tsvio

ATOL = 1e-10
NILEARN_KIND = {
    "partialcorrelation": "partial correlation",
    "covariance": "covariance",
    "precision": "precision",
}
SPACE = "MNI152NLin2009cAsym"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def timeseries(seed: int = 0, n_volumes: int = 50, n_regions: int = 9) -> np.ndarray:
    """Correlated region signals (a shared component), standardised as bidsapp writes them."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n_volumes, n_regions)) + rng.standard_normal((n_volumes, 1))
    return (values - values.mean(0)) / values.std(0, ddof=1)


def nilearn_matrix(values: np.ndarray, kind: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ConnectivityMeasure(kind=kind).fit_transform([values])[0]


# ----------------------------------------------------------------------------- per run


@pytest.mark.parametrize("kind", sorted(NILEARN_KIND))
def test_measure_equals_nilearn(kind):
    values = timeseries()
    result = connectivity.measure(values, kind)
    np.testing.assert_allclose(result.matrix, nilearn_matrix(values, NILEARN_KIND[kind]), atol=ATOL)
    assert 0 < result.shrinkage < 1


@pytest.mark.parametrize("kind", sorted(NILEARN_KIND))
def test_measure_with_na_regions_equals_nilearn_on_the_others(kind):
    values = timeseries(seed=1)
    values[:, 2] = np.nan  # a region written as n/a
    values[:, 6] = 0.0  # a constant region
    result = connectivity.measure(values, kind).matrix
    keep = np.ones(values.shape[1], bool)
    keep[[2, 6]] = False
    assert np.isnan(result[~keep]).all() and np.isnan(result[:, ~keep]).all()
    expected = nilearn_matrix(values[:, keep], NILEARN_KIND[kind])
    np.testing.assert_allclose(result[np.ix_(keep, keep)], expected, atol=ATOL)


def test_correlation_is_pearson_and_nilearn_shrinks_it():
    """``correlation`` stays numpy's Pearson r; nilearn's is (1 - s) r + s I, s its shrinkage."""
    values = timeseries(seed=2)
    values[:, 4] = np.nan
    ours = connectivity.measure(values, "correlation")
    keep = np.arange(values.shape[1]) != 4
    pearson = np.corrcoef(values[:, keep], rowvar=False)
    assert ours.shrinkage is None
    np.testing.assert_array_equal(ours.matrix[np.ix_(keep, keep)], pearson)
    assert np.isnan(ours.matrix[4]).all()
    zscored = (values[:, keep] - values[:, keep].mean(0)) / values[:, keep].std(0)
    _, shrinkage = connectivity.ledoit_wolf(zscored)
    expected = (1 - shrinkage) * pearson + shrinkage * np.eye(keep.sum())
    np.testing.assert_allclose(nilearn_matrix(values[:, keep], "correlation"), expected, atol=ATOL)


def test_relmat_is_the_pearson_table_of_before():
    values = timeseries(seed=3)
    table = pd.DataFrame(values, columns=[f"r{i}" for i in range(values.shape[1])])
    got = connectivity.relmat(table)
    assert list(got.index) == list(got.columns) == list(table.columns)
    np.testing.assert_array_equal(got.to_numpy(), connectivity.pearson(values))


def test_fisher_z():
    values = timeseries(seed=4)
    values[:, 0] = np.nan
    table = pd.DataFrame(values)
    out = connectivity.relmats(table, ["correlation", "partialcorrelation"], fisher=True)
    assert set(out) == {
        "correlation",
        "partialcorrelation",
        "correlation_fisherz",
        "partialcorrelation_fisherz",
    }
    for kind in ("correlation", "partialcorrelation"):
        r = out[kind][0].to_numpy()
        z = out[f"{kind}_fisherz"][0].to_numpy()
        off = ~np.eye(len(r), dtype=bool) & np.isfinite(r)
        np.testing.assert_allclose(z[off], np.arctanh(r[off]), rtol=1e-15)
        np.testing.assert_allclose(np.tanh(z[off]), r[off], atol=1e-15)
        assert np.isnan(np.diag(z)).all() and np.isnan(z[0]).all()
    # precision and covariance are not correlations: no Fisher z of them
    assert set(connectivity.relmats(table, ["precision"], fisher=True)) == {"precision"}


def test_unknown_measure_is_refused():
    with pytest.raises(connectivity.ConnectivityError, match="unknown connectivity measure"):
        connectivity.measure(timeseries(), "tangent")


# ----------------------------------------------------------------------------- tangent


def test_tangent_reference_equals_nilearn_mean():
    runs = [timeseries(seed=s, n_volumes=40 + 5 * s) for s in range(4)]
    ours = connectivity.tangent_reference(runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ConnectivityMeasure(kind="tangent").fit(runs).mean_
    np.testing.assert_allclose(ours.matrix, expected, atol=ATOL)
    assert ours.converged and ours.regions_used.all() and len(ours.shrinkages) == 4


def test_tangent_leaves_out_regions_na_in_any_run():
    runs = [timeseries(seed=s) for s in range(3)]
    runs[1][:, 3] = np.nan  # n/a in one run only
    ours = connectivity.tangent_reference(runs)
    keep = np.arange(runs[0].shape[1]) != 3
    assert ours.regions_used.tolist() == keep.tolist()
    assert np.isnan(ours.matrix[3]).all() and np.isnan(ours.matrix[:, 3]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ConnectivityMeasure(kind="tangent").fit([r[:, keep] for r in runs]).mean_
    np.testing.assert_allclose(ours.matrix[np.ix_(keep, keep)], expected, atol=ATOL)


def test_geometric_mean_of_commuting_matrices():
    """Diagonal matrices: the geometric mean is the element-wise geometric mean."""
    rng = np.random.default_rng(5)
    diagonals = rng.uniform(0.5, 3.0, size=(5, 4))
    mean, converged = connectivity.geometric_mean([np.diag(d) for d in diagonals])
    assert converged
    np.testing.assert_allclose(mean, np.diag(np.exp(np.log(diagonals).mean(0))), atol=1e-9)


def test_geometric_mean_refuses_a_matrix_that_is_not_spd():
    with pytest.raises(connectivity.ConnectivityError, match="positive definite"):
        connectivity.geometric_mean([np.eye(3), np.diag([1.0, -1.0, 1.0])])


# ----------------------------------------------------------------------------- settings


def test_config_choices_match_the_measures():
    assert app_config.CONNECTIVITY_CHOICES == (
        connectivity.RUN_MEASURES + connectivity.GROUP_MEASURES
    )
    assert set(app_config.GROUP_ONLY_MEASURES) == set(connectivity.GROUP_MEASURES)
    extra = {k.partition("_")[0] for k in run_outputs.EXTRA_RELMATS}
    assert extra | {"correlation"} == set(connectivity.RUN_MEASURES)


def test_config_connectivity(tmp_path):
    config = make_config(tmp_path / "in", tmp_path / "out")
    assert config.connectivity == ("correlation",) and not config.fisher_z
    config = make_config(tmp_path, tmp_path / "o", connectivity=["tangent", "precision"])
    assert config.connectivity == ("precision", "tangent")
    assert config.run_measures == ("precision",)
    with pytest.raises(ConfigError, match="--fisher-z"):
        make_config(tmp_path, tmp_path / "o", connectivity="covariance", fisher_z=True)
    with pytest.raises(ConfigError, match="--connectivity"):
        make_config(tmp_path, tmp_path / "o", connectivity=["pearson"])


def test_write_run_outputs_refuses_an_unknown_matrix(tmp_path):
    entities = {"subject": "01", "task": "rest", "run": "1", "space": SPACE}
    paths = run_outputs.output_paths(tmp_path, entities, "A", "mean", "simple")
    table = pd.DataFrame(timeseries(n_regions=3), columns=["a", "b", "c"])
    with pytest.raises(ValueError, match="Unknown relmat keys"):
        run_outputs.output_paths(tmp_path, entities, "A", "mean", "simple", ["tangent"])
    with pytest.raises(ValueError, match="name the set with the same relmats"):
        run_outputs.write_run_outputs(
            paths,
            timeseries=table,
            timeseries_sidecar={},
            coverage={"a": 1.0, "b": 1.0, "c": 1.0},
            extra_relmats={"precision": (table.corr(), {})},
        )
    assert not paths.timeseries.exists()


# ----------------------------------------------------------------------------- end to end


def read_matrix(path) -> np.ndarray:
    return tsvio.read_tsv(path).drop(columns="Node").to_numpy(dtype=float)


def read_values(path) -> np.ndarray:
    return tsvio.read_tsv(path).to_numpy(dtype=float)


def test_cli_writes_every_measure_concatenation_and_tangent(capsys, tmp_path, small):
    out = tmp_path / "out"
    options = ["--connectivity", "correlation", "partialcorrelation", "covariance"]
    options += ["--connectivity", "precision", "--fisher-z", "--concatenate-runs"]
    code, stdout = run_cli(capsys, *argv(small, out, *options))
    assert code == 0, stdout
    keys = run_outputs.extra_relmat_keys(connectivity.RUN_MEASURES, fisher_z=True)
    assert keys == tuple(run_outputs.EXTRA_RELMATS)
    entities = {"subject": "01", "task": "rest", "run": "1", "space": SPACE, "res": "2"}
    one = run_outputs.output_paths(out, entities, LABEL, "mean", "simple", keys)
    extra = {key: (tsv, js) for key, tsv, js in one.extra_relmats}
    assert one.relmat.name.endswith("_stat-pearsoncorrelation_desc-simple_relmat.tsv")
    assert extra["correlation_fisherz"][0].name.endswith(
        "_stat-pearsoncorrelation_desc-simpleFisherz_relmat.tsv"
    )
    for key, label in [("partialcorrelation", "partialcorrelation"), ("precision", "precision")]:
        assert extra[key][0].name.endswith(f"_stat-{label}_desc-simple_relmat.tsv")
    assert all(p.is_file() for p in one.all())
    values = read_values(one.timeseries)
    for key in ("partialcorrelation", "covariance", "precision"):
        tsv, js = extra[key]
        sidecar = json.loads(js.read_text())
        expected = connectivity.measure(values, key)
        np.testing.assert_allclose(read_matrix(tsv), expected.matrix, atol=ATOL, equal_nan=True)
        assert sidecar["CovarianceEstimator"] == "LedoitWolf"
        assert sidecar["Shrinkage"] == pytest.approx(expected.shrinkage, abs=1e-15)
        assert sidecar["Weighted"] is True and sidecar["Directed"] is False
        assert sidecar["StorageFormat"] == "Full" and sidecar["NonNegative"] is False
        assert sidecar["ValidDiagonal"] is (key != "partialcorrelation")
        assert sidecar["Sources"][0].endswith(one.timeseries.name)
    z = json.loads(extra["partialcorrelation_fisherz"][1].read_text())
    assert z["FisherZTransformed"] is True and z["ValidDiagonal"] is False
    assert z["RelationshipMeasure"].startswith("Fisher z-transformed")
    pearson = json.loads(one.relmat_json.read_text())
    assert pearson["RelationshipMeasure"] == "Pearson correlation coefficient"
    assert "CovarianceEstimator" not in pearson

    # per subject: the two runs' TSVs stacked, as written
    entities = {"subject": "01", "task": "rest", "space": SPACE, "res": "2"}
    subject = run_outputs.output_paths(out, entities, LABEL, "mean", "simple", keys)
    assert "run-" not in subject.relmat.name
    stacked = np.vstack([read_values(set_of(out, run=r).timeseries) for r in (1, 2)])
    np.testing.assert_allclose(
        read_matrix(subject.relmat), connectivity.pearson(stacked), atol=ATOL, equal_nan=True
    )
    sub_extra = {key: (tsv, js) for key, tsv, js in subject.extra_relmats}
    keep = np.isfinite(stacked).all(0)
    np.testing.assert_allclose(
        read_matrix(sub_extra["precision"][0])[np.ix_(keep, keep)],
        nilearn_matrix(stacked[:, keep], "precision"),
        atol=ATOL,
    )
    sidecar = json.loads(sub_extra["precision"][1].read_text())
    assert sidecar["NumberOfRuns"] == 2 and len(sidecar["Sources"]) == 2
    assert sidecar["VolumesPerRun"] == [
        len(read_values(set_of(out, run=r).timeseries)) for r in (1, 2)
    ]

    # the same command again: nothing recomputed
    code, stdout = run_cli(capsys, *argv(small, out, *options))
    assert code == 0 and "0 written, 2 already done" in stdout

    # group level with tangent: equals nilearn on the runs' TSVs (regions with data in all)
    code, stdout = run_cli(capsys, small, out, "group", "--no-reports", "--connectivity", "tangent")
    assert code == 0, stdout
    tangent = (
        out
        / "group"
        / (f"task-rest_space-{SPACE}_atlas-{LABEL}_stat-tangent_desc-simple_relmat.tsv")
    )
    runs = [read_values(set_of(out, run=r).timeseries) for r in (1, 2)]
    keep = np.logical_and.reduce([np.isfinite(r).all(0) for r in runs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ConnectivityMeasure(kind="tangent").fit([r[:, keep] for r in runs]).mean_
    np.testing.assert_allclose(read_matrix(tangent)[np.ix_(keep, keep)], expected, atol=ATOL)
    sidecar = json.loads(tangent.with_suffix(".json").read_text())
    assert sidecar["NumberOfRuns"] == 2 and sidecar["Converged"] is True
    assert len(sidecar["RegionsLeftOut"]) == int((~keep).sum())

    # default settings again: recomputed, and the other measures' files are gone
    code, stdout = run_cli(capsys, *argv(small, out))
    assert code == 0 and "2 written" in stdout
    assert one.relmat.is_file() and not any(p.exists() for p, _ in extra.values())
    code, _ = run_cli(capsys, small, out, "group", "--no-reports")
    assert code == 0 and not tangent.exists()


def test_a_matrix_of_another_configuration_is_seen_and_removed(tmp_path):
    """A covariance left beside a default set: the set is not complete, and removal takes it."""
    entities = {"subject": "01", "task": "rest", "run": "1", "space": SPACE}
    paths = run_outputs.output_paths(tmp_path, entities, "A", "mean", "simple")
    table = pd.DataFrame(timeseries(n_regions=3), columns=["a", "b", "c"])
    run_outputs.write_run_outputs(
        paths,
        timeseries=table,
        timeseries_sidecar={"ParametersFingerprint": "x"},
        coverage={"a": 1.0, "b": 1.0, "c": 1.0},
        relmat=connectivity.relmat(table),
    )
    assert run_outputs.outputs_complete(paths, {"ParametersFingerprint": "x"})
    stale = dict((k, tsv) for k, tsv, _ in paths.other_relmats)["covariance"]
    stale.write_text("Node\ta\n")
    assert not run_outputs.outputs_complete(paths, {"ParametersFingerprint": "x"})
    assert stale in run_outputs.remove_run_outputs(paths).removed and not stale.exists()


def test_concatenation_refuses_an_edited_run_and_a_run_without_run_label(tmp_path, capsys):
    from bidsapp.app.concatenation import write_concatenated
    from bidsapp.app.status import RunStatus

    out = tmp_path / "out"
    config = make_config(tmp_path, out, connectivity=["correlation", "covariance"])
    base = {"subject": "01", "task": "rest", "space": SPACE}
    columns = ["a", "b", "c", "d"]
    for run in ("1", "2"):
        paths = run_outputs.output_paths(out, {**base, "run": run}, "A", "mean", "simple")
        run_outputs.write_run_outputs(
            paths,
            timeseries=pd.DataFrame(timeseries(seed=int(run), n_regions=4), columns=columns),
            timeseries_sidecar={},
            coverage=dict.fromkeys(columns, 1.0),
        )
    statuses = [RunStatus(f"run{r}", {**base, "run": r}, "A", "ok") for r in ("1", "2")]
    assert write_concatenated(config, statuses) == 1
    subject = run_outputs.output_paths(out, base, "A", "mean", "simple", ["covariance"])
    stacked = np.vstack([timeseries(seed=s, n_regions=4) for s in (1, 2)])
    np.testing.assert_allclose(
        read_matrix(subject.extra_relmats[0][1]),
        nilearn_matrix(stacked, "covariance"),
        atol=ATOL,  # the TSVs hold each float's shortest exact repr
    )
    # an edited run TSV: refused, named, the per-subject files left as they were
    before = subject.relmat.read_bytes()
    edited = run_outputs.output_paths(out, {**base, "run": "2"}, "A", "mean", "simple")
    edited.timeseries.write_text(edited.timeseries.read_text().replace("\n", "\n ", 1))
    assert write_concatenated(config, statuses) == 0
    printed = capsys.readouterr()
    assert printed.err.count(edited.timeseries.name) == 1  # once for the task, not per run
    assert subject.relmat.read_bytes() == before
    # a run named without run- owns the per-subject names: never replaced
    run_outputs.write_run_outputs(
        run_outputs.output_paths(out, base, "A", "mean", "simple"),
        timeseries=pd.DataFrame(timeseries(n_regions=4), columns=columns),
        timeseries_sidecar={},
        coverage=dict.fromkeys(columns, 1.0),
    )
    assert write_concatenated(config, statuses[:1]) == 0
    assert "named without run-" in capsys.readouterr().err
