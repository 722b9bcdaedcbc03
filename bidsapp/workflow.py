"""run(config): query -> atlas -> extract (joblib) -> write -> summary.

Each run is an independent job: one that fails is reported with a one-line reason and the
others still finish. Outputs of a run are written atomically, sidecar last, so a sidecar
whose recorded parameters match means the run is complete (resume).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp import __version__
from bidsapp.atlas import Atlas
from bidsapp.config import RunConfig, fingerprint, to_jsonable
from bidsapp.query import BoldRun

logger = logging.getLogger(__name__)
progress = logging.getLogger("bidsapp.progress")

EXIT_OK = 0
EXIT_RUN_FAILED = 1


class UsageProblem(ValueError):
    """The invocation cannot run at all (exit code 2): bad directories, unusable options."""


@dataclass
class RunStatus:
    """Outcome of one run for one atlas (a row of the per-subject status table)."""

    run: BoldRun
    atlas: str
    status: str  # ok, skipped (already done), failed
    reason: str = ""
    volumes_total: int | None = None
    volumes_kept: int | None = None
    mean_fd: float | None = None
    regions_below_coverage: int | None = None
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    def as_row(self, denoise_label: str, stat: str) -> dict[str, Any]:
        """Return this status as a flat dict for the status table."""
        row: dict[str, Any] = {k: v for k, v in self.run.entities.items()}
        row.update(
            run_name=self.run.name,
            atlas=self.atlas,
            denoise=denoise_label,
            stat=stat,
            status=self.status,
            reason=self.reason,
            volumes_total=self.volumes_total,
            volumes_kept=self.volumes_kept,
            mean_fd=self.mean_fd,
            regions_below_coverage=self.regions_below_coverage,
            outputs=";".join(self.outputs),
        )
        return row


def _check_directories(config: RunConfig) -> None:
    bids_dir = config.bids_dir.resolve()
    output_dir = config.output_dir.resolve()
    if not bids_dir.is_dir():
        raise UsageProblem(f"BIDS_DIR {config.bids_dir} is not a directory")
    if not (bids_dir / "dataset_description.json").is_file():
        raise UsageProblem(
            f"BIDS_DIR {config.bids_dir} has no dataset_description.json; expected an fMRIPrep "
            "derivatives dataset"
        )
    if output_dir == bids_dir:
        raise UsageProblem("OUTPUT_DIR must not be BIDS_DIR: outputs would mix with the inputs")
    if bids_dir in output_dir.parents and (output_dir.parent == bids_dir):
        logger.warning("OUTPUT_DIR is inside BIDS_DIR; pybids may index outputs on later runs")


def _run_fingerprint(run: BoldRun, atlas: Atlas, config: RunConfig) -> str:
    return fingerprint(
        {
            "bold": str(run.preproc_bold),
            "atlas": [atlas.label, str(atlas.dseg), atlas.source],
            "denoise": config.denoise,
            "extraction": config.extraction,
            "version": __version__,
        }
    )


def _source_uri(path: Path, bids_dir: Path) -> str:
    from bidsapp.outputs import bids_uri

    try:
        return bids_uri(path, root=bids_dir, dataset="preprocessed")
    except ValueError:  # outside the dataset (e.g. a symlink target elsewhere)
        return path.resolve().as_uri()


def _sidecar(
    extraction: Any, atlas_result: Any, config: RunConfig, node_files: list[str], fp: str
) -> dict[str, Any]:
    run = extraction.run
    atlas = atlas_result.atlas
    coverage = atlas_result.coverage
    below = [str(n) for n, c in coverage.items() if c < config.extraction.min_coverage]
    sources = [_source_uri(extraction.bold, config.bids_dir)]
    sources += [_source_uri(p, config.bids_dir) for p in (run.brain_mask, run.confounds) if p]
    sources += node_files
    return {
        "SamplingFrequency": 1.0 / extraction.t_r,
        "RepetitionTime": extraction.t_r,
        "Sources": sources,
        "Atlas": {
            "Name": atlas.name,
            "Description": atlas.desc,
            "Label": atlas.label,
            "Space": atlas.space,
            "Source": atlas.source,
            "Resolution": atlas.resolution,
        },
        "Extraction": to_jsonable(config.extraction),
        "Denoising": to_jsonable(config.denoise),
        "ConfoundColumns": extraction.confound_columns,
        "NumberOfVolumes": extraction.n_volumes,
        "RetainedVolumes": extraction.retained,
        "CensoredVolumes": extraction.censored,
        "MeanFramewiseDisplacement": extraction.mean_fd,
        "RegionsBelowCoverage": below,
        "Warnings": extraction.warnings,
        "SoftwareName": "bidsapp",
        "SoftwareVersion": __version__,
        "ParametersFingerprint": fp,
    }


def _relmat(timeseries: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation between regions; n/a for regions without data."""
    values = timeseries.to_numpy(dtype=float)
    valid = np.isfinite(values).all(axis=0) & (np.nanstd(values, axis=0) > 0)
    corr = np.full((values.shape[1], values.shape[1]), np.nan)
    if valid.sum() > 0:
        corr[np.ix_(valid, valid)] = np.corrcoef(values[:, valid], rowvar=False)
    return pd.DataFrame(corr, index=timeseries.columns, columns=timeseries.columns)


def process_run(
    run: BoldRun,
    atlases: Sequence[Atlas],
    config: RunConfig,
    node_files: dict[str, list[str]],
) -> list[RunStatus]:
    """Extract and write one run's outputs for every atlas; never raises.

    Parameters
    ----------
    run : BoldRun
        The fMRIPrep run.
    atlases : sequence of Atlas
        Atlases resolved for the run's grid.
    config : RunConfig
        The invocation's settings.
    node_files : dict
        BIDS URIs of each atlas's copy in the output (image and LUT), by atlas label.

    Returns
    -------
    list of RunStatus
        One status per atlas: ``ok``, ``skipped`` (complete outputs with the same parameters
        exist) or ``failed`` with a one-line reason.
    """
    from bidsapp import outputs
    from bidsapp.extract import ExtractionError, extract_run

    stat = config.extraction.strategy
    desc = config.denoise.label
    todo: list[Atlas] = []
    statuses: list[RunStatus] = []
    for atlas in atlases:
        paths = outputs.output_paths(config.output_dir, run.entities, atlas.label, stat, desc)
        fp = _run_fingerprint(run, atlas, config)
        if not config.overwrite and outputs.outputs_complete(paths, {"ParametersFingerprint": fp}):
            sidecar = outputs.read_sidecar(paths.timeseries_json) or {}
            statuses.append(
                RunStatus(
                    run,
                    atlas.label,
                    "skipped",
                    "outputs exist with the same parameters",
                    volumes_total=sidecar.get("NumberOfVolumes"),
                    volumes_kept=len(sidecar.get("RetainedVolumes", [])),
                    mean_fd=sidecar.get("MeanFramewiseDisplacement"),
                    regions_below_coverage=len(sidecar.get("RegionsBelowCoverage", [])),
                    outputs=[str(paths.timeseries)],
                )
            )
        else:
            todo.append(atlas)
    if not todo:
        return statuses
    try:
        extraction = extract_run(run, todo, config.denoise, config.extraction)
    except ExtractionError as err:
        return statuses + [RunStatus(run, a.label, "failed", str(err)) for a in todo]
    except Exception as err:  # one broken run must never stop the others
        logger.debug("unexpected failure in %s", run.name, exc_info=True)
        reason = f"{run.preproc_bold}: {type(err).__name__}: {err}"
        return statuses + [RunStatus(run, a.label, "failed", reason) for a in todo]

    for atlas_result in extraction.per_atlas:
        atlas = atlas_result.atlas
        paths = outputs.output_paths(config.output_dir, run.entities, atlas.label, stat, desc)
        fp = _run_fingerprint(run, atlas, config)
        files = node_files.get(atlas.label, [])
        sidecar = _sidecar(extraction, atlas_result, config, files, fp)
        relmat_sidecar = outputs.relmat_metadata(files)
        # "bids::" names a file of this very dataset.
        relmat_sidecar["Sources"] = [
            outputs.bids_uri(paths.timeseries, root=config.output_dir, dataset="")
        ]
        try:
            written = outputs.write_run_outputs(
                paths,
                timeseries=atlas_result.timeseries,
                timeseries_sidecar=sidecar,
                coverage=atlas_result.coverage,
                relmat=_relmat(atlas_result.timeseries),
                relmat_sidecar=relmat_sidecar,
            )
        except (OSError, ValueError) as err:
            statuses.append(RunStatus(run, atlas.label, "failed", f"cannot write outputs: {err}"))
            continue
        below = int((atlas_result.coverage < config.extraction.min_coverage).sum())
        statuses.append(
            RunStatus(
                run,
                atlas.label,
                "ok",
                "; ".join(extraction.warnings),
                volumes_total=extraction.n_volumes,
                volumes_kept=len(extraction.retained),
                mean_fd=extraction.mean_fd,
                regions_below_coverage=below,
                seconds=extraction.seconds,
                outputs=[str(p) for p in written],
            )
        )
    return statuses


def _voxel_size(run: BoldRun) -> tuple[float, float, float]:
    import nibabel as nib

    zooms = nib.load(str(run.preproc_bold)).header.get_zooms()[:3]
    return tuple(float(z) for z in zooms)  # type: ignore[return-value]


def _resolve_atlases(runs: Sequence[BoldRun], config: RunConfig) -> dict[tuple, list[Atlas]]:
    """Resolve every atlas once per (space, voxel size) among the runs."""
    from bidsapp.atlas import get_atlas

    resolved: dict[tuple, list[Atlas]] = {}
    for run in runs:
        key = (run.entities.get("space", config.space), _rounded(_voxel_size(run)))
        if key not in resolved:
            resolved[key] = [
                get_atlas(spec, space=key[0], voxel_size_mm=key[1], lut_path=config.atlas_lut)
                for spec in config.atlases
            ]
    return resolved


def _rounded(zooms: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(z, 3) for z in zooms)


def _parallel_results(
    runs: Sequence[BoldRun], atlases_for: dict, config: RunConfig, node_files: dict
) -> Iterator[list[RunStatus]]:
    def atlases_of(run: BoldRun) -> list[Atlas]:
        key = (run.entities.get("space", config.space), _rounded(_voxel_size(run)))
        return atlases_for[key]

    if config.n_jobs == 1 and config.dask_scheduler is None:
        for run in runs:
            yield process_run(run, atlases_of(run), config, node_files)
        return
    from joblib import Parallel, delayed, parallel_backend

    tasks = (delayed(process_run)(run, atlases_of(run), config, node_files) for run in runs)
    if config.dask_scheduler is not None:
        from dask.distributed import Client  # optional 'dask' extra

        with Client(config.dask_scheduler), parallel_backend("dask"):
            yield from Parallel(return_as="generator_unordered")(tasks)
        return
    yield from Parallel(n_jobs=config.n_jobs, return_as="generator_unordered")(tasks)


def run_participant(config: RunConfig) -> int:
    """Run the participant level.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    int
        0 when every run succeeded or was already complete, 1 otherwise.
    """
    from bidsapp import outputs
    from bidsapp.atlas import AtlasError
    from bidsapp.query import NoRunsFoundError, find_runs

    _check_directories(config)
    started = time.perf_counter()
    database_dir = config.work_dir / "pybids_db" if config.work_dir else None
    try:
        runs = find_runs(
            config.bids_dir,
            space=config.space,
            participant_labels=config.participant_labels,
            session_labels=config.session_labels,
            tasks=config.tasks,
            bids_filters=config.bids_filters,
            database_dir=database_dir,
        )
    except NoRunsFoundError as err:
        print(f"bidsapp: nothing to do: {err}")
        return EXIT_RUN_FAILED
    try:
        atlases_for = _resolve_atlases(runs, config)
    except AtlasError as err:
        print(f"bidsapp: atlas error: {err}")
        return EXIT_RUN_FAILED

    config.output_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_dataset_description(
        config.output_dir,
        version=__version__,
        source_dir=config.bids_dir,
        container=os.environ.get("BIDSAPP_CONTAINER"),
    )
    outputs.write_bidsignore(config.output_dir)
    node_files = {
        atlas.label: outputs.copy_atlas(config.output_dir, atlas).node_files
        for atlases in atlases_for.values()
        for atlas in atlases
    }

    print(f"bidsapp {__version__}: {len(runs)} run(s), {len(config.atlases)} atlas(es)")
    statuses: list[RunStatus] = []
    for batch in _parallel_results(runs, atlases_for, config, node_files):
        for status in batch:
            _print_progress(status)
        statuses.extend(batch)
    _write_status(statuses, config)
    return _summarise(statuses, time.perf_counter() - started)


def _print_progress(status: RunStatus) -> None:
    name = f"{status.run.name} [{status.atlas}]"
    if status.status == "failed":
        print(f"FAILED  {name}: {status.reason}", flush=True)
    elif status.status == "skipped":
        print(f"skipped {name}: already done", flush=True)
    else:
        print(
            f"ok      {name}: {status.volumes_kept}/{status.volumes_total} volumes kept, "
            f"{status.seconds:.1f} s",
            flush=True,
        )


def _write_status(statuses: Sequence[RunStatus], config: RunConfig) -> None:
    from bidsapp import outputs

    by_subject: dict[str, list[dict[str, Any]]] = {}
    for status in statuses:
        row = status.as_row(config.denoise.label, config.extraction.strategy)
        by_subject.setdefault(status.run.entities["subject"], []).append(row)
    for subject, rows in by_subject.items():
        outputs.write_subject_status(config.output_dir, subject, rows)


def _summarise(statuses: Sequence[RunStatus], seconds: float) -> int:
    failed = [s for s in statuses if s.status == "failed"]
    ok = sum(s.status == "ok" for s in statuses)
    skipped = sum(s.status == "skipped" for s in statuses)
    print(f"done in {seconds:.1f} s: {ok} written, {skipped} already done, {len(failed)} failed")
    if failed:
        print("failed runs:")
        for status in failed:
            print(f"  {status.run.name} [{status.atlas}]: {status.reason}")
        return EXIT_RUN_FAILED
    return EXIT_OK


def run(config: RunConfig) -> int:
    """Run one bidsapp invocation (participant or group level).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    int
        The exit code: 0 success, 1 a run failed or nothing to do.

    Raises
    ------
    UsageProblem
        When the directories or options make the invocation impossible.
    """
    if config.work_dir is not None:
        config.work_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MPLCONFIGDIR", str(config.work_dir / "matplotlib"))
    else:
        os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="bidsapp-mpl-"))
    if config.analysis_level == "group":
        from bidsapp.group import run_group

        return run_group(config)
    return run_participant(config)
