"""The files of one run: their names, their writing as one set, resume checks and removal.

Part of the dataset layer. For one run, atlas and denoising label (XCP-D 26.x compatible
names, BEP038 ``atlas-`` entity)::

    sub-<s>/[ses-<x>/]func/
      <run>_space-<space>_atlas-<A>_stat-<strategy>_desc-<D>_timeseries.{tsv,json}
      <run>_space-<space>_atlas-<A>_stat-coverage_bold.{tsv,json}
      <run>_space-<space>_atlas-<A>_stat-pearsoncorrelation_desc-<D>_relmat.{tsv,json}
      <run>_space-<space>_atlas-<A>_stat-<measure>_desc-<D>[Fisherz]_relmat.{tsv,json}
      <run>_space-<space>_desc-<D>_design.tsv        (XCP-D's design matrix, every volume)
      <run>_space-<space>_desc-<D>_outliers.{tsv,json}  (XCP-D's censoring mask, every volume)

The Pearson relmat is the default; the other measures (``partialcorrelation``, ``covariance``,
``precision``, and Fisher z-transformed correlations with ``Fisherz`` after the ``desc-``
label) are written when asked for (:data:`EXTRA_RELMATS`).

The design and outliers files belong to the run, not to an atlas: every atlas's set records
them (same content), and they are removed only with the run's last set.

Within one run the timeseries TSV is written last (see :func:`write_run_outputs`), and the
timeseries sidecar records the SHA-256 of every other file of the set, so a resumed run can
tell a complete, consistent set from a truncated or mixed one (:func:`outputs_complete`).
"""

from __future__ import annotations

import json
import logging
import os
import stat as stat_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bidsapp.dataset.fileio import (
    atomic_write_text,
    ensure_directory,
    no_linked_folder,
    read_regular_bytes,
    sha256_digest,
)
from bidsapp.dataset.jsonio import json_text, read_sidecar
from bidsapp.dataset.naming import (
    DROPPED_ENTITIES,
    RUN_ENTITIES,
    bids_name,
    canonical_entities,
    check_label,
    to_label,
)
from bidsapp.dataset.tsvio import tsv_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutputPaths:
    """Paths of the files written for one run, one atlas and one denoising label.

    Attributes
    ----------
    directory : Path
        ``OUTPUT_DIR/sub-<s>/[ses-<x>/]func``.
    timeseries, timeseries_json : Path
        Region timeseries TSV and its sidecar (the TSV is the run's completion marker).
    coverage, coverage_json : Path
        Per-region brain-mask coverage TSV and sidecar.
    relmat, relmat_json : Path
        Pearson correlation matrix TSV and sidecar.
    design : Path
        The confound regressors projected out, one column each, one row per volume of the
        BOLD (shared by the run's atlases).
    outliers, outliers_json : Path
        The censoring mask, one row per volume (``outlier``: 1 censored, 0 kept), and its
        sidecar (shared by the run's atlases).
    root : Path or None
        The output dataset root; when set, the folders between it and ``directory`` must
        not be symbolic links (:func:`~bidsapp.dataset.fileio.ensure_directory`).
    extra_relmats : tuple of (str, Path, Path)
        ``(key, TSV, sidecar)`` of the other matrices of :data:`EXTRA_RELMATS` the set holds
        (those requested).
    other_relmats : tuple of (str, Path, Path)
        The same for the matrices of :data:`EXTRA_RELMATS` not requested: never part of the
        set, removed when found (another configuration left them).

    """

    directory: Path
    timeseries: Path
    timeseries_json: Path
    coverage: Path
    coverage_json: Path
    relmat: Path
    relmat_json: Path
    design: Path
    outliers: Path
    outliers_json: Path
    root: Path | None = None
    extra_relmats: tuple[tuple[str, Path, Path], ...] = ()
    other_relmats: tuple[tuple[str, Path, Path], ...] = ()

    def all(self) -> list[Path]:
        """Return every file path, in the order :func:`write_run_outputs` writes them.

        Returns
        -------
        list of Path
            Coverage, relmats, design, outliers, timeseries sidecar, then the timeseries TSV.

        """
        extras = [path for _, tsv, json in self.extra_relmats for path in (tsv, json)]
        return [
            self.coverage,
            self.coverage_json,
            self.relmat,
            self.relmat_json,
            *extras,
            *self.shared(),
            self.timeseries_json,
            self.timeseries,
        ]

    def others(self) -> list[Path]:
        """Return the files of the matrices not requested (stale when they exist).

        Returns
        -------
        list of Path
            TSV and sidecar of each of :attr:`other_relmats`.

        """
        return [path for _, tsv, json in self.other_relmats for path in (tsv, json)]

    def shared(self) -> list[Path]:
        """Return the files of the set that every atlas of the run shares.

        Returns
        -------
        list of Path
            The design matrix and the outliers TSV and sidecar.

        """
        return [self.design, self.outliers, self.outliers_json]


def _run_entities(entities: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the input entities that name an output; reject ones that cannot be placed.

    An entity that cannot be written is an error, never silently dropped: dropping it would
    let two different inputs write one output name.
    """
    canonical = canonical_entities(entities)
    unexpected = sorted(set(canonical) - set(RUN_ENTITIES) - DROPPED_ENTITIES - {"space"})
    if unexpected:
        raise ValueError(
            f"Run entities {unexpected} cannot be written in output names; "
            f"known entities are {list(RUN_ENTITIES)} (plus space, and {sorted(DROPPED_ENTITIES)}"
            " which are dropped)."
        )
    kept = {name: canonical.get(name) for name in RUN_ENTITIES}
    if kept["subject"] is None or kept["task"] is None:
        raise ValueError(f"Run entities need 'subject' and 'task'; got {dict(entities)}.")
    return kept


def output_paths(
    output_dir: str | os.PathLike[str],
    entities: Mapping[str, Any],
    atlas: str,
    strategy: str,
    denoise: str,
    relmats: Sequence[str] = (),
) -> RunOutputPaths:
    """Name the outputs of one run for one atlas and one denoising label.

    Parameters
    ----------
    output_dir : path-like
        Root of the output derivative dataset.
    entities : mapping
        Entities of the preprocessed BOLD (pybids long names or file-name keys). Every
        entity is kept, in BIDS order (``res``, ``den``, ``cohort``, ``part`` included), so
        two inputs never share output names; ``desc``, ``suffix``, ``extension`` and
        ``datatype`` are dropped; ``space`` is required.
    atlas : str
        Alphanumeric atlas label.
    strategy : str
        Extraction statistic (``mean``, ``median``, ``standard_deviation``, ...); written as
        ``stat-<to_label(strategy)>`` because config values may contain underscores.
    denoise : str
        Alphanumeric denoising label (``simple``, ``scrubbing``, ...), the ``desc-`` entity.
    relmats : sequence of str, default=()
        Keys of :data:`EXTRA_RELMATS` the set holds besides the Pearson relmat
        (:func:`extra_relmat_keys`).

    Returns
    -------
    RunOutputPaths
        The output paths of the run: nine, and two per key of ``relmats``.

    Raises
    ------
    ValueError
        If an entity is missing, unknown or not a valid label.

    """
    run = _run_entities(entities)
    space = canonical_entities(entities).get("space")
    if space is None:
        raise ValueError(f"Run entities need 'space'; got {dict(entities)}.")
    base = {**run, "space": space, "atlas": atlas}
    directory = Path(output_dir) / f"sub-{check_label(run['subject'], entity='subject')}"
    if run["session"] is not None:
        directory = directory / f"ses-{check_label(run['session'], entity='session')}"
    directory = directory / "func"

    def path(stat: str, desc: str | None, suffix: str, extension: str) -> Path:
        names = {**base, "stat": stat, "desc": desc}
        return directory / bids_name(names, suffix=suffix, extension=extension)

    stat = to_label(strategy)
    # The relmat's stat- is the correlation, so a non-mean extraction statistic goes into
    # its desc- to keep e.g. mean- and median-based matrices apart.
    relmat_desc = denoise if stat == "mean" else f"{denoise}{stat[0].upper()}{stat[1:]}"
    unknown = sorted(set(relmats) - set(EXTRA_RELMATS))
    if unknown:
        raise ValueError(f"Unknown relmat keys {unknown}; known: {sorted(EXTRA_RELMATS)}.")
    wanted = set(relmats)
    extras = [
        (
            key,
            path(label, relmat_desc + more, "relmat", ".tsv"),
            path(label, relmat_desc + more, "relmat", ".json"),
        )
        for key, (label, more) in EXTRA_RELMATS.items()
    ]

    def run_path(suffix: str, extension: str) -> Path:
        # No atlas-/stat-: the regressors and the censoring belong to the run (as XCP-D's).
        names = {**run, "space": space, "desc": denoise}
        return directory / bids_name(names, suffix=suffix, extension=extension)

    return RunOutputPaths(
        directory=directory,
        timeseries=path(stat, denoise, "timeseries", ".tsv"),
        timeseries_json=path(stat, denoise, "timeseries", ".json"),
        coverage=path("coverage", None, "bold", ".tsv"),
        coverage_json=path("coverage", None, "bold", ".json"),
        relmat=path("pearsoncorrelation", relmat_desc, "relmat", ".tsv"),
        relmat_json=path("pearsoncorrelation", relmat_desc, "relmat", ".json"),
        design=run_path("design", ".tsv"),
        outliers=run_path("outliers", ".tsv"),
        outliers_json=run_path("outliers", ".json"),
        root=Path(output_dir),
        extra_relmats=tuple(named for named in extras if named[0] in wanted),
        other_relmats=tuple(named for named in extras if named[0] not in wanted),
    )


def extra_relmat_keys(measures: Sequence[str], fisher_z: bool = False) -> tuple[str, ...]:
    """Keys of :data:`EXTRA_RELMATS` written for these measures.

    Parameters
    ----------
    measures : sequence of str
        Per-run measures (``correlation``, ``partialcorrelation``, ...).
    fisher_z : bool, default=False
        Whether the correlations' Fisher z-transforms are written too.

    Returns
    -------
    tuple of str
        In the order of :data:`EXTRA_RELMATS`.
    """
    wanted = set(measures) | ({f"{m}_fisherz" for m in measures} if fisher_z else set())
    return tuple(key for key in EXTRA_RELMATS if key in wanted)


#: Per-run matrices beside the Pearson relmat: key -> (``stat-`` label, ``desc-`` addition).
#: Keys are :data:`bidsapp.app.connectivity.RUN_MEASURES` (``_fisherz``: Fisher z-transformed).
EXTRA_RELMATS: dict[str, tuple[str, str]] = {
    "partialcorrelation": ("partialcorrelation", ""),
    "covariance": ("covariance", ""),
    "precision": ("precision", ""),
    "correlation_fisherz": ("pearsoncorrelation", "Fisherz"),
    "partialcorrelation_fisherz": ("partialcorrelation", "Fisherz"),
}

# BEP017 descriptions of each measure: (RelationshipMeasure, ValidDiagonal, NonNegative).
_MEASURES: dict[str, tuple[str, bool, bool]] = {
    "correlation": ("Pearson correlation coefficient", False, False),
    "partialcorrelation": ("partial correlation coefficient", False, False),
    "covariance": ("covariance", True, False),
    "precision": ("precision (inverse covariance)", True, False),
}


def relmat_metadata(
    node_files: Sequence[str] | None = None,
    measure: str = "correlation",
    *,
    shrinkage: float | None = None,
    fisher_z: bool = False,
) -> dict[str, Any]:
    """Return the BEP017-style metadata of a connectivity matrix.

    Parameters
    ----------
    node_files : sequence of str, optional
        BIDS URIs of the atlas image and look-up table defining the nodes
        (:attr:`AtlasFiles.node_files`); ``NodeFiles`` is left out when None.
    measure : {"correlation", "partialcorrelation", "covariance", "precision"}
        The measure (:data:`bidsapp.app.connectivity.RUN_MEASURES`).
    shrinkage : float, optional
        Ledoit-Wolf shrinkage of the covariance the measure derives from: adds
        ``CovarianceEstimator`` and ``Shrinkage``.
    fisher_z : bool, default=False
        The values are ``arctanh`` of the measure (diagonal ``n/a``): adds
        ``FisherZTransformed``.

    Returns
    -------
    dict
        ``RelationshipMeasure``, ``Weighted``, ``Directed``, ``ValidDiagonal``,
        ``StorageFormat``, ``NonNegative`` and (when given) ``NodeFiles``; add the run's
        parameters as needed.

    Raises
    ------
    ValueError
        For an unknown measure.

    """
    if measure not in _MEASURES:
        raise ValueError(f"unknown connectivity measure {measure!r}; use one of {list(_MEASURES)}")
    name, valid_diagonal, non_negative = _MEASURES[measure]
    if fisher_z:
        name = f"Fisher z-transformed (arctanh) {name}"
    metadata: dict[str, Any] = {
        "RelationshipMeasure": name,
        "Weighted": True,
        "Directed": False,
        # 1 (n/a after a Fisher z-transform) by construction for the correlations
        "ValidDiagonal": valid_diagonal and not fisher_z,
        "StorageFormat": "Full",
        "NonNegative": non_negative,
    }
    if shrinkage is not None:
        metadata["CovarianceEstimator"] = "LedoitWolf"
        metadata["Shrinkage"] = shrinkage
    if fisher_z:
        metadata["FisherZTransformed"] = True
    if node_files is not None:
        metadata["NodeFiles"] = list(node_files)
    return metadata


def coverage_metadata() -> dict[str, Any]:
    """Return column descriptions for the coverage table (its default sidecar).

    Returns
    -------
    dict
        BIDS TSV column dictionary for ``Node`` and ``coverage``.
    """
    return {
        "Node": {"Description": "Region name, as in the atlas look-up table."},
        "coverage": {
            "Description": "Fraction of the region's voxels inside the BOLD brain mask.",
            "Units": "arbitrary",
        },
    }


def _coverage_table(coverage: pd.Series | Mapping[str, float], regions: pd.Index) -> pd.DataFrame:
    """Coverage as a ``Node``/``coverage`` table in the timeseries' region order."""
    series = pd.Series(coverage, dtype=float)
    if list(series.index) != list(regions):
        raise ValueError(
            "Coverage regions must match the timeseries columns in the same order; got "
            f"{list(series.index)[:5]}... for {list(regions)[:5]}..."
        )
    return pd.DataFrame({"Node": list(regions), "coverage": series.to_numpy()})


def _relmat_table(relmat: pd.DataFrame, regions: pd.Index) -> pd.DataFrame:
    """Correlation matrix with its row names as a leading ``Node`` column."""
    if list(relmat.index) != list(regions) or list(relmat.columns) != list(regions):
        raise ValueError(
            "The relmat rows and columns must both be the timeseries regions, in order."
        )
    table = relmat.copy()
    table.insert(0, "Node", list(regions))
    return table.reset_index(drop=True)


def outliers_table(n_volumes: int, censored: Sequence[int]) -> pd.DataFrame:
    """Return the censoring mask as XCP-D writes it: one row per volume, 1 = censored.

    Parameters
    ----------
    n_volumes : int
        Volumes of the BOLD.
    censored : sequence of int
        0-based indices of the censored volumes (non-steady-state, motion outliers, short
        segments, non-finite volumes).

    Returns
    -------
    pandas.DataFrame
        One integer column ``outlier``.

    Raises
    ------
    ValueError
        If an index is outside ``[0, n_volumes)``.
    """
    flags = [0] * n_volumes
    for volume in censored:
        if not 0 <= int(volume) < n_volumes:
            raise ValueError(f"Censored volume {volume} is outside a run of {n_volumes} volumes.")
        flags[int(volume)] = 1
    return pd.DataFrame({"outlier": flags})


def write_run_outputs(
    paths: RunOutputPaths,
    *,
    timeseries: pd.DataFrame,
    timeseries_sidecar: Mapping[str, Any],
    coverage: pd.Series | Mapping[str, float],
    coverage_sidecar: Mapping[str, Any] | None = None,
    relmat: pd.DataFrame | None = None,
    relmat_sidecar: Mapping[str, Any] | None = None,
    extra_relmats: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]] | None = None,
    design: pd.DataFrame | None = None,
    outliers: pd.DataFrame | None = None,
    outliers_sidecar: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write all files of one run so that "timeseries TSV exists" means "run complete".

    Order: (1) remove an existing timeseries TSV, the completion marker, so a crash during
    a re-run cannot leave new parameters beside old data; (2) write coverage, relmat and the
    timeseries sidecar; (3) write the timeseries TSV last. Each write is atomic. Therefore
    a timeseries TSV whose sidecar records the requested parameters proves that every file
    of the run was written with those parameters (:func:`outputs_complete`). Everything is
    validated and serialised before step (1), so bad input never destroys finished outputs.

    Parameters
    ----------
    paths : RunOutputPaths
        From :func:`output_paths`.
    timeseries : pandas.DataFrame
        One column per region (LUT order), one row per retained volume; NaN for regions
        written as ``n/a``.
    timeseries_sidecar : mapping
        Sidecar of the timeseries, including the parameters resume checks compare.
    coverage : pandas.Series or mapping
        Fraction of each region's voxels inside the brain mask, indexed by region name in
        the timeseries' column order.
    coverage_sidecar : mapping, optional
        Sidecar of the coverage table; :func:`coverage_metadata` when None.
    relmat : pandas.DataFrame, optional
        Region-by-region correlation matrix; when None, stale relmat files are removed.
    relmat_sidecar : mapping, optional
        Sidecar of the relmat; :func:`relmat_metadata` (without ``NodeFiles``) when None.
    extra_relmats : mapping, optional
        ``key -> (matrix, sidecar)`` for keys of :data:`EXTRA_RELMATS`; the files of the
        keys not given are removed.
    design : pandas.DataFrame, optional
        The confound regressors, one column each, one row per volume of the BOLD; when None
        (no regressor) no design file is written and a stale one is removed.
    outliers : pandas.DataFrame, optional
        The censoring mask (:func:`outliers_table`); when None no outliers files are
        written and stale ones are removed.
    outliers_sidecar : mapping, optional
        Sidecar of the outliers table (column description, thresholds).

    Returns
    -------
    list of Path
        Files written, in write order.

    Raises
    ------
    ValueError
        If the regions of the tables disagree or a table cannot be written as TSV.

    """
    regions = timeseries.columns
    if coverage_sidecar is None:
        coverage_sidecar = coverage_metadata()
    planned: list[tuple[Path, str]] = [
        (paths.coverage, tsv_text(_coverage_table(coverage, regions), path=paths.coverage)),
        (paths.coverage_json, json_text(dict(coverage_sidecar))),
    ]
    if relmat is not None:
        if relmat_sidecar is None:
            relmat_sidecar = relmat_metadata()
        table = _relmat_table(relmat, regions)
        planned += [
            (paths.relmat, tsv_text(table, path=paths.relmat)),
            (paths.relmat_json, json_text(dict(relmat_sidecar))),
        ]
    extra_relmats = dict(extra_relmats or {})
    extras = {key: (tsv, json) for key, tsv, json in paths.extra_relmats}
    if set(extra_relmats) != set(extras):
        raise ValueError(
            f"Relmats {sorted(extra_relmats)} given for a set of {sorted(extras)}: name the "
            "set with the same relmats (output_paths)."
        )
    for key, (matrix, sidecar) in extra_relmats.items():
        tsv, json_path = extras[key]
        planned += [
            (tsv, tsv_text(_relmat_table(matrix, regions), path=tsv)),
            (json_path, json_text(dict(sidecar))),
        ]
    if design is not None:
        if outliers is not None and len(design) != len(outliers):
            raise ValueError(
                f"The design matrix has {len(design)} rows for {len(outliers)} volumes."
            )
        planned.append((paths.design, tsv_text(design, path=paths.design)))
    if outliers is not None:
        planned += [
            (paths.outliers, tsv_text(outliers, path=paths.outliers)),
            (paths.outliers_json, json_text(dict(outliers_sidecar or {}))),
        ]
    timeseries_text = tsv_text(timeseries, path=paths.timeseries)
    # The sidecar records the hash of every other file of the set (all texts are known
    # before anything is written), so resume can tell a complete, consistent set from a
    # truncated TSV or a relmat left by another configuration (:func:`outputs_complete`).
    members = {path.name: _sha256_text(text) for path, text in planned}
    members[paths.timeseries.name] = _sha256_text(timeseries_text)
    sidecar = {**dict(timeseries_sidecar), OUTPUT_FILES_KEY: members}
    planned += [
        (paths.timeseries_json, json_text(sidecar)),
        (paths.timeseries, timeseries_text),
    ]
    if paths.root is not None:  # no folder of the set may be a planted link
        ensure_directory(paths.root, paths.directory)
    paths.timeseries.unlink(missing_ok=True)
    written = {path for path, _ in planned}
    for stale in (paths.relmat, paths.relmat_json, *paths.shared(), *paths.others()):
        if stale not in written:  # left by another configuration
            stale.unlink(missing_ok=True)
    for path, text in planned:
        atomic_write_text(path, text)
    logger.debug("Wrote %s", paths.timeseries)
    return [path for path, _ in planned]


#: Key of the timeseries sidecar recording the SHA-256 of every other file of the run's set.
OUTPUT_FILES_KEY = "OutputFiles"


def _sha256_text(text: str) -> str:
    """``sha256:<hex>`` of a text's UTF-8 bytes."""
    return sha256_digest(text.encode("utf-8"))


def outputs_complete(paths: RunOutputPaths, parameters: Mapping[str, Any]) -> bool:
    """Tell whether a run's whole set of outputs exists, is consistent and has the parameters.

    Complete means: the timeseries sidecar is a regular file (not a symbolic link) holding
    every item of ``parameters`` with an equal value and an ``OutputFiles`` record, and every
    file that record names (timeseries TSV, coverage, relmat, design and outliers files) is a
    regular file whose SHA-256 equals the recorded one. A truncated TSV, a deleted coverage
    or relmat file, or one written by another configuration makes the set incomplete, and
    the run is recomputed. The files are small (a 400-region relmat is ~3 MB), so hashing
    them costs milliseconds.

    Parameters
    ----------
    paths : RunOutputPaths
        From :func:`output_paths`.
    parameters : mapping
        Sidecar items that must match (compared after a JSON round trip, so tuples equal
        lists).

    Returns
    -------
    bool
        True if the set is complete and matches ``parameters``.

    """
    if paths.root is not None and not no_linked_folder(paths.root, paths.directory):
        return False
    sidecar = read_sidecar(paths.timeseries_json)
    if sidecar is None:
        return False
    expected = json.loads(json_text(dict(parameters)))
    if not all(key in sidecar and sidecar[key] == value for key, value in expected.items()):
        return False
    members = sidecar.get(OUTPUT_FILES_KEY)
    known = {p.name: p for p in [*paths.all(), *paths.others()] if p != paths.timeseries_json}
    if not isinstance(members, dict) or paths.timeseries.name not in members:
        return False
    for name, digest in members.items():
        path = known.get(name)
        if path is None:
            return False
        try:
            data = read_regular_bytes(path)
        except OSError:
            return False
        if data is None or sha256_digest(data) != digest:
            logger.info("%s is missing or differs from its record: recomputing", path)
            return False
    # A relmat the record does not name must not sit beside the set (another configuration).
    return all(name in members or not os.path.lexists(p) for name, p in known.items())


@dataclass(frozen=True)
class RemovedOutputs:
    """What :func:`remove_run_outputs` removed, and what it could not.

    Attributes
    ----------
    removed : tuple of Path
        Files removed.
    failed : tuple of Path
        Paths that could not be removed (a folder in a file's place, a read-only folder).
    reasons : tuple of str
        Why, one per path of ``failed``.

    """

    removed: tuple[Path, ...] = ()
    failed: tuple[Path, ...] = ()
    reasons: tuple[str, ...] = ()

    def problem(self) -> str:
        """Return one line naming what could not be removed, or ``""`` when all went.

        Returns
        -------
        str
            E.g. ``"cannot remove its old outputs: /out/...relmat.tsv (it is a folder);
            remove them by hand"``.

        """
        if not self.failed:
            return ""
        listed = "; ".join(f"{p} ({r})" for p, r in zip(self.failed, self.reasons, strict=True))
        return f"cannot remove its old outputs: {listed}; remove them by hand"


def remove_run_outputs(paths: RunOutputPaths, *, keep_shared: bool = False) -> RemovedOutputs:
    """Remove the files of one run's set (only the names bidsapp gives that set); never raises.

    Used when a run fails or is excluded, so outputs of an earlier invocation do not stay
    looking current. The timeseries TSV (the completion marker) goes first. Nothing is
    removed when a folder of the set is a symbolic link (its files are not bidsapp's). A
    folder in a file's place is never removed, and a file that cannot be removed (read-only
    folder) does not stop the others: both are reported in the result, for the run's status.

    Parameters
    ----------
    paths : RunOutputPaths
        From :func:`output_paths`.
    keep_shared : bool, default=False
        Leave the files the run's atlases share (:meth:`RunOutputPaths.shared`): another
        atlas's set of the same run, kept or written, records them.

    Returns
    -------
    RemovedOutputs
        Files removed, and those that could not be with why (:meth:`RemovedOutputs.problem`).

    """
    removed: list[Path] = []
    failed: list[tuple[Path, str]] = []
    try:
        linked = paths.root is not None and not no_linked_folder(paths.root, paths.directory)
    except OSError as err:  # a folder of the set cannot even be looked at
        return RemovedOutputs(failed=(paths.directory,), reasons=(err.strerror or str(err),))
    if linked:
        return RemovedOutputs()  # never delete through a planted link (the target is not ours)
    keep = set(paths.shared()) if keep_shared else set()
    for path in [*reversed(paths.all()), *paths.others()]:
        if path in keep:
            continue
        try:
            if stat_module.S_ISDIR(os.lstat(path).st_mode):
                failed.append((path, "it is a folder, not a file bidsapp wrote"))
                continue
            os.unlink(path)  # a planted link is removed itself, never its target
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:  # read-only folder, I/O error: this file only
            failed.append((path, err.strerror or " ".join(str(err).split())))
            continue
        removed.append(path)
    return RemovedOutputs(tuple(removed), tuple(p for p, _ in failed), tuple(r for _, r in failed))
