"""run(config): query -> atlas -> extract (joblib) -> write -> summary.

Each run is an independent job: one that fails is reported with a one-line reason and the
others still finish. Outputs of a run are written atomically, timeseries TSV last, so a
timeseries TSV whose sidecar records the same parameters fingerprint means the run is
complete (resume). After the last run of a subject, its status table and HTML report are
written.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import sys
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
from bidsapp.extract import RunExtraction, RunInputs, one_line

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_RUN_FAILED = 1


class UsageProblem(ValueError):
    """The invocation cannot run at all (exit code 2): bad directories, unusable options."""


@dataclass
class RunStatus:
    """Outcome of one run for one atlas (a row of the subject's status table).

    Attributes
    ----------
    name : str
        Run name, e.g. ``sub-01_task-rest_run-1``.
    entities : dict
        Entities of the outputs (pybids long names, ``space`` included).
    atlas : str
        Atlas label.
    status : str
        ``ok``, ``skipped`` (outputs exist with the same parameters) or ``failed``.
    reason : str
        One-line reason of a failure, or the run's warnings.
    volumes_total, volumes_kept : int or None
        Volumes in the series and kept after censoring.
    mean_fd : float or None
        Mean framewise displacement (mm).
    regions_below_coverage : int or None
        Regions written as n/a.
    seconds : float
        Wall time of the extraction.
    outputs : list of str
        Files written (or found, when skipped).
    warnings : list of str
        Problems that did not stop the run.
    """

    name: str
    entities: dict[str, str]
    atlas: str
    status: str
    reason: str = ""
    volumes_total: int | None = None
    volumes_kept: int | None = None
    mean_fd: float | None = None
    regions_below_coverage: int | None = None
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        """Subject label without ``sub-``."""
        return self.entities["subject"]

    def as_row(self, denoise_label: str, stat: str) -> dict[str, Any]:
        """Return this status as a flat dict for :func:`bidsapp.outputs.write_subject_status`.

        Parameters
        ----------
        denoise_label : str
            ``desc-`` label of the denoising setting.
        stat : str
            Extraction statistic.

        Returns
        -------
        dict
            Entities, ``atlas``, ``denoise``, ``stat``, ``status``, ``reason`` and counts.
        """
        row: dict[str, Any] = dict(self.entities)
        row.update(
            atlas=self.atlas,
            denoise=denoise_label,
            stat=stat,
            status=self.status,
            reason=self.reason,
            volumes_total=self.volumes_total,
            volumes_kept=self.volumes_kept,
            mean_fd=self.mean_fd,
            regions_below_coverage=self.regions_below_coverage,
            outputs=list(self.outputs),
        )
        return row


@dataclass(frozen=True)
class AtlasTarget:
    """An atlas resolved for one space and voxel size, with its copy in the outputs.

    Attributes
    ----------
    atlas : Atlas
        The atlas.
    node_files : tuple of str
        BIDS URIs (``bids:atlases:...``) of the copied image and look-up table.
    digest : str
        Hash of the image and look-up table contents (part of the resume fingerprint).
    """

    atlas: Atlas
    node_files: tuple[str, ...]
    digest: str


# ------------------------------------------------------------------ checks


def check_directories(config: RunConfig) -> None:
    """Refuse directories that cannot work (exit code 2).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Raises
    ------
    UsageProblem
        If BIDS_DIR is not a dataset directory or OUTPUT_DIR is BIDS_DIR.
    """
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
        raise UsageProblem(
            f"OUTPUT_DIR {config.output_dir} is BIDS_DIR: outputs would mix with the inputs; "
            "choose another OUTPUT_DIR"
        )
    if bids_dir in output_dir.parents:
        logger.warning("OUTPUT_DIR %s is inside BIDS_DIR %s", output_dir, bids_dir)


def check_options(config: RunConfig) -> None:
    """Check the options that need the disk: preset file, filters, local atlases, LUT.

    A local atlas must declare its template space (a ``space-`` entity in its name, or
    ``--atlas-space``), and not a subject-specific one such as ``T1w``; see
    :func:`bidsapp.atlas.local_atlas_space`. Whether it matches each run's space is checked
    per run (ICA-AROMA runs are in ``MNI152NLin6Asym`` whatever ``--space`` says).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Raises
    ------
    UsageProblem
        With a message naming the option and the file.
    """
    from bidsapp import confounds as conf
    from bidsapp.atlas import AtlasError, local_atlas_space, parse_atlas_spec
    from bidsapp.query import QueryError, load_bids_filters

    if config.denoise.is_preset_file:
        try:
            conf.load_preset(config.denoise.name)
        except conf.ConfoundsError as err:
            raise UsageProblem(f"--denoise-strategy: {one_line(err)}") from err
    try:
        load_bids_filters(config.bids_filters)
    except QueryError as err:
        raise UsageProblem(f"--bids-filter-file: {one_line(err)}") from err
    local = []
    for spec in config.atlases:
        try:
            parsed = parse_atlas_spec(spec)
        except AtlasError as err:
            raise UsageProblem(f"--atlas: {one_line(err)}") from err
        if parsed.path is not None:
            if not parsed.path.is_file():
                raise UsageProblem(f"--atlas {spec}: no such file")
            try:
                local_atlas_space(parsed.path, config.atlas_space)
            except AtlasError as err:
                raise UsageProblem(f"--atlas: {one_line(err)}") from err
            local.append(parsed.path)
    if config.atlas_space is not None and not local:
        raise UsageProblem(
            "--atlas-space applies to local atlases (--atlas path/to/*_dseg.nii.gz); "
            "TemplateFlow atlases are taken in the space of each run"
        )
    if config.atlas_lut is not None:
        if not local:
            raise UsageProblem(
                "--atlas-lut applies to a local atlas (--atlas path/to/*_dseg.nii.gz); "
                "TemplateFlow atlases bring their own look-up table"
            )
        if not config.atlas_lut.is_file():
            raise UsageProblem(f"--atlas-lut {config.atlas_lut}: no such file")


# ------------------------------------------------------------------ atlases


def _atlas_labels(config: RunConfig) -> list[str]:
    """Labels of the requested atlases as written before they are resolved."""
    from bidsapp.atlas import atlas_label, parse_atlas_spec

    labels = []
    for spec in config.atlases:
        parsed = parse_atlas_spec(spec)
        labels.append(atlas_label(parsed.name, parsed.desc))
    return labels


def _grid_key(inputs: RunInputs) -> tuple:
    return (inputs.space, tuple(round(z, 3) for z in inputs.voxel_size_mm))


def _digest(atlas: Atlas) -> str:
    sha = hashlib.sha256(Path(atlas.dseg).read_bytes())
    sha.update(atlas.lut[["index", "name"]].to_csv(sep="\t", index=False).encode())
    return sha.hexdigest()[:16]


def _atlas_reason(spec: str, space: str, err: Exception) -> str:
    """One-line reason for the runs an atlas error stops (the full message is printed)."""
    first = one_line(str(err).split(". ")[0].split(":\n")[0]) or type(err).__name__
    return f"atlas {spec} is unusable in space {space} (see 'atlas error' above): {first}"


def resolve_atlases(
    jobs: Sequence[RunInputs], config: RunConfig
) -> tuple[dict[tuple, list[AtlasTarget]], dict[tuple, list[tuple[str, str]]]]:
    """Resolve and copy every atlas once per (space, voxel size) among the jobs.

    Parameters
    ----------
    jobs : sequence of RunInputs
        Prepared runs.
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    targets : dict
        Grid key -> atlases ready for extraction.
    failures : dict
        Grid key -> ``(atlas label, one-line reason)`` of atlases that cannot be used; the
        full message is printed once.
    """
    from bidsapp import outputs
    from bidsapp.atlas import AtlasError, get_atlas, parse_atlas_spec

    labels = _atlas_labels(config)
    targets: dict[tuple, list[AtlasTarget]] = {}
    failures: dict[tuple, list[tuple[str, str]]] = {}
    for job in jobs:
        key = _grid_key(job)
        if key in targets:
            continue
        targets[key], failures[key] = [], []
        for spec, label in zip(config.atlases, labels, strict=True):
            local = parse_atlas_spec(spec).path is not None
            try:
                atlas = get_atlas(
                    spec,
                    space=job.space,
                    voxel_size_mm=job.voxel_size_mm,
                    lut_path=config.atlas_lut if local else None,
                    atlas_space=config.atlas_space if local else None,
                )
                copied = outputs.copy_atlas(config.output_dir, atlas)
            except (AtlasError, OSError, ValueError) as err:
                print(f"bidsapp: atlas error: {err}", file=sys.stderr, flush=True)
                failures[key].append((label, _atlas_reason(spec, job.space, err)))
                continue
            targets[key].append(AtlasTarget(atlas, tuple(copied.node_files), _digest(atlas)))
    return targets, failures


# ------------------------------------------------------------------ one run


def _source_uri(path: Path, bids_dir: Path) -> str:
    from bidsapp.outputs import bids_uri

    try:
        return bids_uri(path, root=bids_dir, dataset="preprocessed")
    except ValueError:  # outside the dataset (e.g. a symlink target elsewhere)
        return path.resolve().as_uri()


def _file_identity(path: Path | None, bids_dir: Path) -> list[Any] | None:
    if path is None:
        return None
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    return [_source_uri(path, bids_dir), size]


def run_fingerprint(inputs: RunInputs, target: AtlasTarget, config: RunConfig) -> str:
    """Fingerprint of everything that changes a run's outputs for one atlas.

    Parameters
    ----------
    inputs : RunInputs
        The prepared run.
    target : AtlasTarget
        The atlas.
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    str
        16 hexadecimal characters, recorded as ``ParametersFingerprint`` in the sidecar.
    """
    from bidsapp import confounds as conf

    denoise = to_jsonable(config.denoise)
    if config.denoise.is_preset_file:
        try:
            denoise["preset"] = conf.load_preset(config.denoise.name)
        except conf.ConfoundsError:
            denoise["preset"] = None
    return fingerprint(
        {
            "inputs": [
                _file_identity(p, config.bids_dir)
                for p in (inputs.bold, inputs.mask, inputs.run.confounds)
            ],
            "t_r": inputs.t_r,
            "atlas": [target.atlas.label, target.atlas.space, target.digest],
            "denoise": denoise,
            "extraction": config.extraction,
            "version": __version__,
        }
    )


def _json_safe(value: Any) -> Any:
    """Replace infinite thresholds (censoring disabled) by None for strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def build_sidecar(
    extraction: RunExtraction,
    result: Any,
    target: AtlasTarget,
    config: RunConfig,
    parameters_fingerprint: str,
) -> dict[str, Any]:
    """Return the timeseries sidecar of one run and atlas.

    Parameters
    ----------
    extraction : RunExtraction
        The run's extraction.
    result : AtlasTimeseries
        The atlas's timeseries and coverage.
    target : AtlasTarget
        The atlas and its copy in the outputs.
    config : RunConfig
        The invocation's settings.
    parameters_fingerprint : str
        From :func:`run_fingerprint`.

    Returns
    -------
    dict
        JSON-compatible metadata: sampling frequency (Hz), sources (BIDS URIs), atlas,
        extraction and denoising parameters, confound columns, kept and censored volumes,
        mean framewise displacement (mm), software and fingerprint.
    """
    inputs = extraction.inputs
    atlas = target.atlas
    sources = [_source_uri(inputs.bold, config.bids_dir)]
    sources += [_source_uri(p, config.bids_dir) for p in (inputs.mask, inputs.run.confounds) if p]
    sources += list(target.node_files)
    denoise = to_jsonable(config.denoise)
    denoise["parameters"] = _json_safe(to_jsonable(extraction.preset))
    return {
        "SamplingFrequency": 1.0 / inputs.t_r,
        "RepetitionTime": inputs.t_r,
        "Sources": sources,
        "Atlas": {
            "Name": atlas.name,
            "Description": atlas.desc,
            "Label": atlas.label,
            "Space": atlas.space,
            "Source": atlas.source,
            "Resolution": atlas.resolution,
            "Image": target.node_files[0] if target.node_files else None,
            "LookUpTable": target.node_files[1] if len(target.node_files) > 1 else None,
            "NumberOfRegions": int(result.timeseries.shape[1]),
        },
        "Extraction": to_jsonable(config.extraction),
        "Denoising": denoise,
        "ConfoundColumns": extraction.confound_columns,
        "NumberOfVolumes": inputs.n_volumes,
        "RetainedVolumes": extraction.retained,
        "CensoredVolumes": extraction.censored,
        "MeanFramewiseDisplacement": extraction.mean_fd,
        "RegionsBelowCoverage": result.below_coverage,
        "Warnings": extraction.warnings,
        "SoftwareName": "bidsapp",
        "SoftwareVersion": __version__,
        "ParametersFingerprint": parameters_fingerprint,
    }


def _relmat(timeseries: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation between regions; n/a for regions without data."""
    values = timeseries.to_numpy(dtype=float)
    valid = np.isfinite(values).all(axis=0)
    valid[valid] = np.std(values[:, valid], axis=0) > 0
    corr = np.full((values.shape[1], values.shape[1]), np.nan)
    if valid.any():
        corr[np.ix_(valid, valid)] = np.corrcoef(values[:, valid], rowvar=False)
    return pd.DataFrame(corr, index=timeseries.columns, columns=timeseries.columns)


def _skipped(inputs: RunInputs, target: AtlasTarget, paths: Any) -> RunStatus:
    from bidsapp import outputs

    sidecar = outputs.read_sidecar(paths.timeseries_json) or {}
    return RunStatus(
        inputs.name,
        inputs.entities,
        target.atlas.label,
        "skipped",
        "outputs exist with the same parameters",
        volumes_total=sidecar.get("NumberOfVolumes"),
        volumes_kept=len(sidecar.get("RetainedVolumes") or []),
        mean_fd=sidecar.get("MeanFramewiseDisplacement"),
        regions_below_coverage=len(sidecar.get("RegionsBelowCoverage") or []),
        outputs=[str(p) for p in paths.all() if p.is_file()],
    )


def process_run(
    inputs: RunInputs, targets: Sequence[AtlasTarget], config: RunConfig
) -> list[RunStatus]:
    """Extract and write one run's outputs for every atlas; never raises.

    Parameters
    ----------
    inputs : RunInputs
        The prepared run.
    targets : sequence of AtlasTarget
        Atlases resolved for the run's space and voxel size.
    config : RunConfig
        The invocation's settings.

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
    todo: list[tuple[AtlasTarget, Any, str]] = []
    statuses: list[RunStatus] = []
    for target in targets:
        paths = outputs.output_paths(
            config.output_dir, inputs.entities, target.atlas.label, stat, desc
        )
        fp = run_fingerprint(inputs, target, config)
        if not config.overwrite and outputs.outputs_complete(paths, {"ParametersFingerprint": fp}):
            statuses.append(_skipped(inputs, target, paths))
        else:
            todo.append((target, paths, fp))
    if not todo:
        return statuses

    def failed(target: AtlasTarget, reason: str) -> RunStatus:
        return RunStatus(inputs.name, inputs.entities, target.atlas.label, "failed", reason)

    try:
        extraction = extract_run(
            inputs, [t.atlas for t, _, _ in todo], config.denoise, config.extraction
        )
    except ExtractionError as err:
        return statuses + [failed(t, one_line(err)) for t, _, _ in todo]
    except Exception as err:  # one broken run must never stop the others
        logger.debug("unexpected failure in %s", inputs.name, exc_info=True)
        reason = f"{inputs.bold}: {type(err).__name__}: {one_line(err)}"
        return statuses + [failed(t, reason) for t, _, _ in todo]

    for (target, paths, fp), result in zip(todo, extraction.per_atlas, strict=True):
        relmat_sidecar = outputs.relmat_metadata(list(target.node_files))
        relmat_sidecar["Sources"] = [
            outputs.bids_uri(paths.timeseries, root=config.output_dir, dataset="")
        ]
        try:
            written = outputs.write_run_outputs(
                paths,
                timeseries=result.timeseries,
                timeseries_sidecar=build_sidecar(extraction, result, target, config, fp),
                coverage=result.coverage,
                relmat=_relmat(result.timeseries),
                relmat_sidecar=relmat_sidecar,
            )
        except Exception as err:  # disk full, permissions: this run only
            logger.debug("writing %s failed", paths.timeseries, exc_info=True)
            statuses.append(
                failed(target, f"cannot write {paths.timeseries.name}: {one_line(err)}")
            )
            continue
        statuses.append(
            RunStatus(
                inputs.name,
                inputs.entities,
                target.atlas.label,
                "ok",
                "; ".join(extraction.warnings),
                volumes_total=inputs.n_volumes,
                volumes_kept=len(extraction.retained),
                mean_fd=extraction.mean_fd,
                regions_below_coverage=len(result.below_coverage),
                seconds=extraction.seconds,
                outputs=[str(p) for p in written],
                warnings=list(extraction.warnings),
            )
        )
    return statuses


# ------------------------------------------------------------------ scheduling


def _process_job(job: tuple[RunInputs, list[AtlasTarget]], config: RunConfig) -> list[RunStatus]:
    """Process one ``(inputs, targets)`` job (module level, so that it pickles)."""
    inputs, targets = job
    return process_run(inputs, targets, config)


def _parallel_results(
    jobs: Sequence[tuple[RunInputs, list[AtlasTarget]]], config: RunConfig
) -> Iterator[list[RunStatus]]:
    """Run the jobs, yielding each one's statuses as it finishes."""
    from functools import partial

    from bidsapp.parallel import run_jobs

    yield from run_jobs(
        partial(_process_job, config=config),
        jobs,
        n_jobs=config.n_jobs,
        dask_scheduler=config.dask_scheduler,
        temp_folder=None if config.work_dir is None else str(config.work_dir / "joblib"),
    )


def _print_memory_bound(jobs: Sequence[tuple[RunInputs, list[AtlasTarget]]], config) -> None:
    """Print what ``--n-jobs`` parallel jobs need in memory (the largest job's bound)."""
    import nibabel as nib

    from bidsapp.engine import memory_bound
    from bidsapp.parallel import memory_message

    bound = 0
    for inputs, targets in jobs:
        img = nib.load(str(inputs.bold))
        n_regions = max((len(t.atlas.lut) for t in targets), default=0)
        bound = max(
            bound,
            memory_bound(
                img.shape,
                img.get_data_dtype(),
                n_atlases=len(targets),
                n_regions=n_regions,
                smoothing=config.extraction.smoothing_fwhm is not None,
            ),
        )
    n_jobs = 1 if config.dask_scheduler is not None else config.n_jobs
    print(memory_message(n_jobs, bound) + (" (per Dask worker)" if config.dask_scheduler else ""))


def _print_progress(status: RunStatus) -> None:
    name = f"{status.name} [{status.atlas}]"
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
        for warning in status.warnings:
            print(f"        warning: {warning}", flush=True)


def _write_report(config: RunConfig, subject: str) -> None:
    """Write a subject's HTML report; a failure is a printed warning, never fatal."""
    try:
        from bidsapp.report.participant import write_participant_report
    except ImportError as err:
        print(f"warning: no participant report for sub-{subject}: {err}", flush=True)
        return
    try:
        path = write_participant_report(config.output_dir, subject, config.bids_dir)
    except Exception as err:  # a report must never fail the runs
        logger.debug("report of sub-%s failed", subject, exc_info=True)
        print(
            f"warning: participant report for sub-{subject} not written: "
            f"{type(err).__name__}: {one_line(err)}",
            flush=True,
        )
        return
    logger.info("wrote %s", path)


def _finish_subject(config: RunConfig, subject: str, statuses: Sequence[RunStatus]) -> None:
    """Record a subject's run statuses, then write its report."""
    from bidsapp import outputs

    rows = [s.as_row(config.denoise.label, config.extraction.strategy) for s in statuses]
    try:
        outputs.write_subject_status(config.output_dir, subject, rows)
    except (OSError, ValueError) as err:
        print(f"warning: status table of sub-{subject} not written: {one_line(err)}")
    report = config.output_dir / f"sub-{subject}.html"
    if config.reports and (any(s.status != "skipped" for s in statuses) or not report.is_file()):
        _write_report(config, subject)


def _summarise(statuses: Sequence[RunStatus], seconds: float) -> int:
    failed = [s for s in statuses if s.status == "failed"]
    ok = sum(s.status == "ok" for s in statuses)
    skipped = sum(s.status == "skipped" for s in statuses)
    print(
        f"done in {seconds:.1f} s: {ok} written, {skipped} already done, {len(failed)} failed",
        flush=True,
    )
    if failed:
        print(f"failed runs ({len(failed)}):")
        for status in failed:
            print(f"  {status.name} [{status.atlas}]: {status.reason}")
        return EXIT_RUN_FAILED
    return EXIT_OK


# ------------------------------------------------------------------ levels


def run_participant(config: RunConfig) -> int:
    """Run the participant level.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    int
        0 when every run succeeded or was already complete; 1 when a run failed or no run
        matched the selection.

    Raises
    ------
    UsageProblem
        When the directories or options make the invocation impossible.
    """
    from bidsapp import outputs
    from bidsapp.extract import ExtractionError, prepare_run
    from bidsapp.query import NoRunsFoundError, QueryError, find_runs

    check_directories(config)
    check_options(config)
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
        print(f"bidsapp: nothing to do: {err}", file=sys.stderr, flush=True)
        return EXIT_RUN_FAILED
    except QueryError as err:
        raise UsageProblem(one_line(err)) from err

    try:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        outputs.write_dataset_description(
            config.output_dir,
            version=__version__,
            source_dir=config.bids_dir,
            container=os.environ.get("BIDSAPP_CONTAINER") or None,
        )
        outputs.write_bidsignore(config.output_dir)
    except OSError as err:
        raise UsageProblem(f"cannot write into OUTPUT_DIR {config.output_dir}: {err}") from err
    print(
        f"bidsapp {__version__}: {len(runs)} run(s), {len(config.atlases)} atlas(es), "
        f"denoising {config.denoise.label}, stat {config.extraction.strategy}",
        flush=True,
    )
    statuses: list[RunStatus] = []
    prepared: list[RunInputs] = []
    labels = _atlas_labels(config)
    for run in runs:
        try:
            prepared.append(prepare_run(run, config.denoise))
        except ExtractionError as err:
            statuses += [
                RunStatus(run.name, dict(run.entities), label, "failed", one_line(err))
                for label in labels
            ]
    targets, failures = resolve_atlases(prepared, config)

    jobs = []
    for inputs in prepared:
        key = _grid_key(inputs)
        statuses += [
            RunStatus(inputs.name, inputs.entities, label, "failed", reason)
            for label, reason in failures[key]
        ]
        if targets[key]:
            jobs.append((inputs, targets[key]))
    for status in statuses:
        _print_progress(status)

    remaining: dict[str, int] = {}
    for inputs, _ in jobs:
        subject = inputs.entities["subject"]
        remaining[subject] = remaining.get(subject, 0) + 1
    by_subject: dict[str, list[RunStatus]] = {}
    for status in statuses:
        by_subject.setdefault(status.subject, []).append(status)
    for subject in sorted(set(by_subject) - set(remaining)):
        _finish_subject(config, subject, by_subject[subject])
    _print_memory_bound(jobs, config)
    for batch in _parallel_results(jobs, config):
        for status in batch:
            _print_progress(status)
        statuses.extend(batch)
        if not batch:
            continue
        subject = batch[0].subject
        by_subject.setdefault(subject, []).extend(batch)
        remaining[subject] -= 1
        if remaining[subject] == 0:
            _finish_subject(config, subject, by_subject[subject])
    return _summarise(statuses, time.perf_counter() - started)


def _matplotlib_dir(config: RunConfig) -> None:
    """Give matplotlib (reports) a writable cache in --work-dir or a temporary directory.

    Nothing happens when ``MPLCONFIGDIR`` is set or reports are off. Without --work-dir
    and without any writable temporary directory, reports fail with a warning.
    """
    if not config.reports or os.environ.get("MPLCONFIGDIR"):
        return
    if config.work_dir is not None:
        folder = config.work_dir / "matplotlib"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["MPLCONFIGDIR"] = str(folder)
        return
    try:
        folder = Path(tempfile.mkdtemp(prefix="bidsapp-mpl-"))
    except OSError:
        logger.warning("No writable temporary directory: pass --work-dir for the reports")
        return
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["MPLCONFIGDIR"] = str(folder)


def run(config: RunConfig) -> int:
    """Run one bidsapp invocation (participant or group level).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    int
        The exit code: 0 success; 1 a run failed, or nothing to do.

    Raises
    ------
    UsageProblem
        When the directories or options make the invocation impossible (exit code 2).
    """
    if config.work_dir is not None:
        try:
            config.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageProblem(f"cannot create --work-dir {config.work_dir}: {err}") from err
    _matplotlib_dir(config)
    if config.analysis_level == "group":
        from bidsapp.group import run_group

        return run_group(config)
    return run_participant(config)
