"""One run, every atlas: resume or extract, then write timeseries, coverage, relmat, sidecars.

Part of the app layer. A run that fails (or is excluded) gets a one-line reason and the files an
earlier invocation wrote for it are removed, so they never look current; the others go on.
Outputs of a run are written atomically, timeseries TSV last.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bidsapp import __version__
from bidsapp.app.atlases import AtlasTarget
from bidsapp.app.config import RunConfig
from bidsapp.app.connectivity import relmats
from bidsapp.app.extract import RunExtraction
from bidsapp.app.planning import run_paths
from bidsapp.app.resume import (
    INPUT_FILES_KEY,
    FileHashes,
    current_sidecar,
    input_records,
    resumed_status,
    run_fingerprint,
    source_uri,
)
from bidsapp.app.run_inputs import RunInputs
from bidsapp.app.status import RunStatus, one_line
from bidsapp.dataset.jsonio import json_value
from bidsapp.report.sources import boldref_of

logger = logging.getLogger(__name__)


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
    sources = [source_uri(inputs.bold, config.bids_dir)]
    sources += [source_uri(p, config.bids_dir) for p in (inputs.mask, inputs.run.confounds) if p]
    sources += list(target.node_files)
    denoise = json_value(config.denoise)
    # Infinite thresholds (censoring disabled) become None for strict JSON.
    denoise["parameters"] = json_value(extraction.preset, finite=True)
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
        "Extraction": json_value(config.extraction),
        "Denoising": denoise,
        "ConfoundColumns": extraction.confound_columns,
        "NumberOfVolumes": inputs.n_volumes,
        "RetainedVolumes": extraction.retained,
        "CensoredVolumes": extraction.censored,
        "NonFiniteVolumes": extraction.non_finite_volumes,
        "MeanFramewiseDisplacement": extraction.mean_fd,
        "RegionsBelowCoverage": result.below_coverage,
        "Warnings": extraction.warnings,
        "SoftwareName": "bidsapp",
        "SoftwareVersion": __version__,
        "ParametersFingerprint": parameters_fingerprint,
    }


def relmat_files(
    timeseries: Any, node_files: list[str], sources: list[str], config: RunConfig
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Return the requested connectivity matrices of one run with their sidecars.

    Parameters
    ----------
    timeseries : pandas.DataFrame
        The cleaned timeseries as written (one column per region).
    node_files : list of str
        BIDS URIs of the atlas image and look-up table.
    sources : list of str
        BIDS URIs of the timeseries the matrices come from.
    config : RunConfig
        ``run_measures`` and ``fisher_z`` are used.

    Returns
    -------
    dict
        ``key -> (matrix, sidecar)``: ``correlation`` for the Pearson relmat, the other keys
        those of :data:`bidsapp.dataset.run_outputs.EXTRA_RELMATS`.
    """
    from bidsapp.dataset import run_outputs

    out = {}
    for key, (matrix, shrinkage) in relmats(
        timeseries, config.run_measures, fisher=config.fisher_z
    ).items():
        measure, _, transform = key.partition("_")
        metadata = run_outputs.relmat_metadata(
            node_files, measure, shrinkage=shrinkage, fisher_z=transform == "fisherz"
        )
        metadata["Sources"] = list(sources)
        out[key] = (matrix, metadata)
    return out


def remove_stopped_outputs(status: RunStatus, paths: Any, *, keep_shared: bool = False) -> None:
    """Remove the old outputs of a run that failed or was excluded; never raises.

    Old files that cannot be removed (a folder in a file's place, a read-only folder) would
    look current beside a ``failed`` or ``excluded`` row, so the run becomes ``failed`` and
    its one-line reason names them; the other runs go on.

    Parameters
    ----------
    status : RunStatus
        The stopped run's status, updated in place when a removal fails.
    paths : RunOutputPaths or None
        The run's output set; None when it cannot be named (nothing to remove).
    keep_shared : bool, default=False
        Leave the run's design and outliers files (another atlas's set records them).
    """
    from bidsapp.dataset import run_outputs

    if paths is None:
        return
    problem = run_outputs.remove_run_outputs(paths, keep_shared=keep_shared).problem()
    if problem:
        first = status.reason if status.status == "failed" else f"{status.status}: {status.reason}"
        status.status, status.reason = "failed", one_line(f"{first}; {problem}")


def process_run(
    inputs: RunInputs, targets: Sequence[AtlasTarget], config: RunConfig
) -> list[RunStatus]:
    """Extract and write one run's outputs for every atlas; never raises.

    A set of outputs is kept (resume) only when it is complete and consistent
    (:func:`bidsapp.dataset.run_outputs.outputs_complete`), was made with the same settings
    (:func:`run_fingerprint`) and from inputs with the same content
    (:func:`inputs_unchanged`). When the run fails or is excluded, the files of its sets
    left by an earlier invocation are removed, so they never look current.

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
        One status per atlas: ``ok`` (``resumed`` when complete outputs were kept),
        ``failed`` with a one-line reason, or ``excluded`` with the reason.
    """
    from bidsapp.app.extract import extract_run
    from bidsapp.app.run_inputs import ExtractionError, RunExcluded
    from bidsapp.dataset import fileio, naming, run_outputs

    hashes = FileHashes()
    todo: list[tuple[AtlasTarget, Any, str]] = []
    statuses: list[RunStatus] = []
    for target in targets:
        paths = run_paths(config, inputs.entities, target.atlas.label)
        try:  # a planted link among the folders: refuse before reading or removing anything
            fileio.ensure_directory(config.output_dir, paths.directory)
        except OSError as err:
            reason = f"cannot write {paths.timeseries.name}: {one_line(err)}"
            statuses.append(
                RunStatus(inputs.name, inputs.entities, target.atlas.label, "failed", reason)
            )
            continue
        fp = run_fingerprint(inputs, target, config)
        sidecar = current_sidecar(paths, fp, inputs, config, hashes)
        if sidecar is not None:
            statuses.append(resumed_status(inputs, target, paths, sidecar))
        else:
            todo.append((target, paths, fp))
    if not todo:
        return statuses

    def stopped(target: AtlasTarget, paths: Any, reason: str, status="failed") -> RunStatus:
        stop = RunStatus(inputs.name, inputs.entities, target.atlas.label, status, reason)
        # The design and outliers files stay while another atlas's set of the run records them.
        kept = any(s.status == "ok" for s in statuses)
        remove_stopped_outputs(stop, paths, keep_shared=kept)
        return stop

    try:
        # Hash the inputs before reading them: what is recorded is never newer than what
        # was used (an edit during extraction makes the next run recompute).
        records = input_records(inputs, config.bids_dir, hashes)
        extraction = extract_run(
            inputs,
            [t.atlas for t, _, _ in todo],
            config.denoise,
            config.extraction,
            mean_image=config.reports and boldref_of(inputs.bold) is None,
        )
    except RunExcluded as err:
        return statuses + [stopped(t, p, one_line(err), "excluded") for t, p, _ in todo]
    except ExtractionError as err:
        return statuses + [stopped(t, p, one_line(err)) for t, p, _ in todo]
    except Exception as err:  # one broken run must never stop the others
        logger.debug("unexpected failure in %s", inputs.name, exc_info=True)
        reason = f"{inputs.bold}: {type(err).__name__}: {one_line(err)}"
        return statuses + [stopped(t, p, reason) for t, p, _ in todo]

    if config.reports:
        write_run_report_data(extraction, todo[0][1].timeseries, config)
    outliers = run_outputs.outliers_table(inputs.n_volumes, extraction.censored)
    outliers_sidecar = outliers_metadata(extraction)
    for (target, paths, fp), result in zip(todo, extraction.per_atlas, strict=True):
        sources = [naming.bids_uri(paths.timeseries, root=config.output_dir, dataset="")]
        matrices = relmat_files(result.timeseries, list(target.node_files), sources, config)
        pearson = matrices.pop("correlation", None)
        sidecar = build_sidecar(extraction, result, target, config, fp)
        sidecar[INPUT_FILES_KEY] = records
        try:
            written = run_outputs.write_run_outputs(
                paths,
                timeseries=result.timeseries,
                timeseries_sidecar=sidecar,
                coverage=result.coverage,
                relmat=None if pearson is None else pearson[0],
                relmat_sidecar=None if pearson is None else pearson[1],
                extra_relmats=matrices,
                design=extraction.design,
                outliers=outliers,
                outliers_sidecar=outliers_sidecar,
            )
        except Exception as err:  # disk full, permissions: this run only
            logger.debug("writing %s failed", paths.timeseries, exc_info=True)
            reason = f"cannot write {paths.timeseries.name}: {one_line(err)}"
            if isinstance(err, OSError) and err.filename and err.strerror:
                # Name the file that failed (the set is written file by file).
                reason = f"cannot write {Path(err.filename).name}: {one_line(err.strerror)}"
            statuses.append(stopped(target, paths, reason))
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


def outliers_metadata(extraction: RunExtraction) -> dict[str, Any]:
    """Return the sidecar of a run's outliers table: what ``outlier`` means, and why.

    Parameters
    ----------
    extraction : RunExtraction
        The run's extraction.

    Returns
    -------
    dict
        The ``outlier`` column's levels, the censoring thresholds in force (FD in mm,
        standardized DVARS; None when that measure does not censor), the minimum segment
        length and the volumes censored for each reason (0-based).
    """
    from bidsapp.confounds import DEFAULT_SCRUB

    fd, dvars = extraction.thresholds
    # Explicit columns (no preset) censor with the default minimum segment.
    scrub = (extraction.preset or {}).get("scrub", DEFAULT_SCRUB) if (fd or dvars) else None
    return {
        "outlier": {
            "Description": "Volumes left out of the regression and of the timeseries "
            "(censored), one row per volume of the BOLD.",
            "Levels": {"0": "kept", "1": "censored"},
        },
        "FramewiseDisplacementThreshold": fd,
        "StdDVARSThreshold": dvars,
        "MinimumSegmentLength": scrub,
        "NonSteadyStateVolumes": list(extraction.non_steady_state),
        "NonFiniteVolumes": list(extraction.non_finite_volumes),
        "CensoredVolumes": list(extraction.censored),
    }


def write_run_report_data(extraction: RunExtraction, timeseries: Path, config: RunConfig) -> None:
    """Record what the run's report section needs from this extraction; never raises.

    The participant report reads it instead of re-reading the BOLD (the mean volume comes
    from the extraction's single pass) or re-deriving the censoring from the presets.

    Parameters
    ----------
    extraction : RunExtraction
        The run's extraction.
    timeseries : Path
        One of the run's timeseries files (names the report data).
    config : RunConfig
        The invocation's settings.
    """
    from bidsapp.app.confounds_selection import preset_description
    from bidsapp.report.run_data import RunReportData, report_data_path, write_report_data

    mean = extraction.mean_img
    data = RunReportData(
        non_steady_state=list(extraction.non_steady_state),
        fd=extraction.fd,
        fd_threshold=extraction.thresholds[0],
        std_dvars_threshold=extraction.thresholds[1],
        preset_description=preset_description(config.denoise),
        mean=None if mean is None else np.asarray(mean.dataobj),
        affine=None if mean is None else mean.affine,
    )
    path = report_data_path(config.output_dir, timeseries)
    try:
        write_report_data(path, data, config.output_dir)
    except OSError as err:  # the report then says what it lacks; the run's outputs stand
        logger.warning("%s not written: %s", path, one_line(err))
