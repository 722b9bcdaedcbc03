"""What a run's report section needs beyond its outputs, as the app wrote it: ``logs/report/``.

Part of the report layer, and the contract between the app (which writes one file per run and
denoising, from its single pass over the BOLD) and the participant report (which reads it and
never re-reads the BOLD nor re-derives the censoring from presets): the run's mean BOLD volume
(only when fMRIPrep left no BOLD reference beside it), its framewise displacement, the
non-steady-state volumes, the censoring thresholds in force and what the denoising regresses.

The file is ``OUTPUT_DIR/logs/report/sub-<label>/<run>_desc-<denoise>_reportdata.npz`` (a NumPy
archive read without pickles); ``logs/`` holds the app's own bookkeeping, beside the status
tables, outside the BIDS derivative files.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bidsapp.dataset.naming import ENTITY_KEYS, ENTITY_ORDER, RUN_KEY_ENTITIES, name_entities
from bidsapp.report.records import present

#: Folder of the report data, relative to the output dataset.
REPORT_DATA_DIR = Path("logs") / "report"


@dataclass
class RunReportData:
    """Per run and denoising: what the report shows that the outputs do not hold.

    Attributes
    ----------
    non_steady_state : list of int
        0-based volumes fMRIPrep flagged as non-steady-state, and the dummy scans.
    fd : numpy.ndarray or None
        Framewise displacement (mm) per volume, from the confounds file; None without one.
    fd_threshold, std_dvars_threshold : float or None
        Censoring thresholds in force (mm; standardized DVARS); None when not censoring.
    preset_description : str
        What the denoising regresses, in words.
    mean : numpy.ndarray or None
        Mean BOLD volume over time (float32, on the BOLD grid), from the extraction pass;
        None when fMRIPrep's BOLD reference serves instead.
    affine : numpy.ndarray or None
        Affine of ``mean``.
    """

    non_steady_state: list[int] = field(default_factory=list)
    fd: np.ndarray | None = None
    fd_threshold: float | None = None
    std_dvars_threshold: float | None = None
    preset_description: str = ""
    mean: np.ndarray | None = None
    affine: np.ndarray | None = None


def report_data_path(
    output_dir: str | os.PathLike[str], timeseries: str | os.PathLike[str]
) -> Path:
    """Path of the report data of the run and denoising of a timeseries file.

    Named from the timeseries file name (one rule for the writer and the reader): its run
    entities and ``desc-``, without ``atlas-`` and ``stat-`` (every atlas shares the file).

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    timeseries : path-like
        A ``_timeseries.tsv`` of the run (its name is used).

    Returns
    -------
    Path
        ``OUTPUT_DIR/logs/report/sub-<s>/sub-<s>_<entities>_desc-<denoise>_reportdata.npz``.
    """
    entities = name_entities(Path(timeseries).name)
    keys = [k for k, _ in ENTITY_ORDER if k in (*RUN_KEY_ENTITIES, "desc")]  # BIDS order
    parts = [f"{ENTITY_KEYS[k]}-{entities[k]}" for k in keys if present(entities.get(k))]
    name = "_".join([*parts, "reportdata"]) + ".npz"
    return Path(output_dir) / REPORT_DATA_DIR / f"sub-{entities['subject']}" / name


def _optional(value: float | None) -> np.ndarray:
    return np.array(np.nan if value is None else float(value))


def write_report_data(path: Path, data: RunReportData, output_dir: Path) -> Path:
    """Write a run's report data atomically (never through a link).

    Parameters
    ----------
    path : Path
        From :func:`report_data_path`.
    data : RunReportData
        What to write.
    output_dir : Path
        Output dataset root (the folders below it are made, links refused).

    Returns
    -------
    Path
        The file written.
    """
    from bidsapp.dataset import fileio

    fileio.ensure_directory(output_dir, path.parent.relative_to(output_dir))
    arrays: dict[str, np.ndarray] = {
        "non_steady_state": np.asarray(data.non_steady_state, dtype=np.int64),
        "fd_threshold": _optional(data.fd_threshold),
        "std_dvars_threshold": _optional(data.std_dvars_threshold),
        "preset_description": np.array(data.preset_description),
    }
    if data.fd is not None:
        arrays["fd"] = np.asarray(data.fd, dtype=np.float64)
    if data.mean is not None and data.affine is not None:
        arrays["mean"] = np.asarray(data.mean, dtype=np.float32)
        arrays["affine"] = np.asarray(data.affine, dtype=np.float64)
    return fileio.atomic_write_bytes(path, _npz_bytes(arrays))


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Write an ``.npz`` archive as :func:`numpy.savez_compressed` does, at zlib level 1.

    The mean volume is noisy float32 that zlib barely shrinks: level 1 is about twice as
    fast as ``savez_compressed``'s 6 for 1 % more bytes. :func:`numpy.load` reads it.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def _float(archive: Any, key: str) -> float | None:
    value = float(archive[key]) if key in archive else float("nan")
    return None if not np.isfinite(value) else value


def read_report_data(path: Path | None) -> RunReportData | None:
    """Read a run's report data; None when the file is missing or unreadable.

    Parameters
    ----------
    path : Path or None
        From :func:`report_data_path`.

    Returns
    -------
    RunReportData or None
        The data the app wrote.
    """
    if path is None or path.is_symlink() or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return RunReportData(
                non_steady_state=[int(v) for v in archive["non_steady_state"]],
                fd=archive["fd"].copy() if "fd" in archive else None,
                fd_threshold=_float(archive, "fd_threshold"),
                std_dvars_threshold=_float(archive, "std_dvars_threshold"),
                preset_description=str(archive["preset_description"]),
                mean=archive["mean"].copy() if "mean" in archive else None,
                affine=archive["affine"].copy() if "affine" in archive else None,
            )
    except (OSError, ValueError, KeyError):
        return None
