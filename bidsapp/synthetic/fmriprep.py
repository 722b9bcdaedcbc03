"""A synthetic fMRIPrep derivatives dataset: preprocessed BOLD, masks, sidecars and confounds.

Part of the synthetic data. :func:`make_fmriprep_dataset` writes preprocessed BOLD runs with
region-structured signals, brain masks, sidecars and confounds files whose columns and JSON
metadata follow fMRIPrep's (and, optionally, ICA-AROMA outputs).
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bidsapp.synthetic.anatomy import box_grid, tissue_masks
from bidsapp.synthetic.bold import render_bold, run_signals, to_volume
from bidsapp.synthetic.confounds import confounds_table
from bidsapp.synthetic.files import save_nifti, write_json, write_tsv

logger = logging.getLogger(__name__)


_AROMA_SPACE = "MNI152NLin6Asym"


@dataclass(frozen=True)
class _Run:
    """Identity of one BOLD run in the demo dataset."""

    subject: str
    session: str | None
    task: str
    acquisition: str | None
    run: str | None

    @property
    def prefix(self) -> str:
        """BIDS entities of the run, e.g. ``sub-01_ses-1_task-rest_run-1``."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        parts.append(f"task-{self.task}")
        if self.acquisition:
            parts.append(f"acq-{self.acquisition}")
        if self.run is not None:
            parts.append(f"run-{self.run}")
        return "_".join(parts)

    def folder(self, root: Path) -> Path:
        """Return the ``func`` folder of the run."""
        path = root / f"sub-{self.subject}"
        if self.session:
            path = path / f"ses-{self.session}"
        return path / "func"


def _check_label(value: object, what: str) -> str:
    """Return ``value`` as a BIDS label, or raise ValueError if not alphanumeric."""
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9]+", text):
        raise ValueError(f"{what} {text!r} is not a BIDS label (letters and digits only).")
    return text


def _space_entities(space: str, res: str | None) -> str:
    """Return ``space-X[_res-Y]``."""
    return f"space-{space}" + (f"_res-{res}" if res is not None else "")


def _write_bold_outputs(
    folder: Path,
    stem: str,
    volume: np.ndarray,
    brain: np.ndarray,
    affine: np.ndarray,
    t_r: float,
    task: str,
    *,
    desc: str,
    extension: str,
    write_tr: bool,
    write_mask: bool,
) -> None:
    """Write one BOLD image, its JSON sidecar and (optionally) its brain mask."""
    save_nifti(volume, affine, folder / f"{stem}_desc-{desc}_bold{extension}", t_r=t_r)
    sidecar = {"SkullStripped": True, "TaskName": task}
    if write_tr:
        sidecar["RepetitionTime"] = float(t_r)
    write_json(folder / f"{stem}_desc-{desc}_bold.json", sidecar)
    if write_mask:
        save_nifti(brain.astype(np.uint8), affine, folder / f"{stem}_desc-brain_mask{extension}")
        write_json(folder / f"{stem}_desc-brain_mask.json", {"Type": "Brain"})


def _write_anat(root: Path, subject: str, space: str, res: str | None, grid) -> None:
    """Write a subject's anatomical outputs (T1w-space and template-space masks)."""
    folder = root / f"sub-{subject}" / "anat"
    t1w_shape, t1w_affine = _t1w_grid(grid)
    t1w_masks = tissue_masks(t1w_shape, t1w_affine)
    t1w = np.where(t1w_masks["wm"], 110.0, np.where(t1w_masks["brain"], 70.0, 0.0))
    t1w_path = folder / f"sub-{subject}_desc-preproc_T1w.nii.gz"
    save_nifti(t1w.astype(np.float32), t1w_affine, t1w_path)
    save_nifti(
        t1w_masks["brain"].astype(np.uint8),
        t1w_affine,
        folder / f"sub-{subject}_desc-brain_mask.nii.gz",
    )
    # A template-space anatomical mask: same space and res as the BOLD, no task.
    shape, affine = grid
    save_nifti(
        tissue_masks(shape, affine)["brain"].astype(np.uint8),
        affine,
        folder / f"sub-{subject}_{_space_entities(space, res)}_desc-brain_mask.nii.gz",
    )


def _t1w_grid(grid) -> tuple[tuple[int, int, int], np.ndarray]:
    """Return a native-like T1w grid: the MNI box shifted, same voxel size."""
    shape, affine = grid
    shifted = affine.copy()
    shifted[:3, 3] += (2.0, -4.0, 6.0)
    return tuple(int(n) - 2 for n in shape), shifted


def _dataset_description(version: str) -> dict:
    """Return fMRIPrep's ``dataset_description.json`` content."""
    return {
        "Name": "fMRIPrep - fMRI PREProcessing workflow (bidsapp synthetic demo)",
        "BIDSVersion": "1.8.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "fMRIPrep",
                "Version": version,
                "CodeURL": f"https://github.com/nipreps/fmriprep/archive/{version}.tar.gz",
            }
        ],
        "HowToAcknowledge": "Synthetic data written by bidsapp.demo; not real fMRIPrep output.",
    }


def _default_spikes(n_volumes: int, n_dummy: int) -> tuple[int, ...]:
    """Default high-motion volumes: a pair at 40% of the run and one at 75%."""
    candidates = {int(0.4 * n_volumes), int(0.4 * n_volumes) + 1, int(0.75 * n_volumes)}
    return tuple(sorted(v for v in candidates if n_dummy < v < n_volumes))


def _runs(subjects, sessions, tasks, acquisitions, runs) -> list[_Run]:
    """Enumerate runs, checking every label."""
    listed = []
    for subject in subjects:
        for session in sessions:
            for task in tasks:
                for acquisition in acquisitions:
                    for run in runs:
                        listed.append(
                            _Run(
                                _check_label(subject, "subject"),
                                None if session is None else _check_label(session, "session"),
                                _check_label(task, "task"),
                                None
                                if acquisition is None
                                else _check_label(acquisition, "acquisition"),
                                None if run is None else _check_label(run, "run"),
                            )
                        )
    return listed


def make_fmriprep_dataset(
    root: str | Path,
    *,
    subjects: Sequence[str] = ("01", "02"),
    sessions: Sequence[str | None] = (None,),
    tasks: Sequence[str] = ("rest",),
    acquisitions: Sequence[str | None] = (None,),
    runs: Sequence[int | str | None] = (1, 2),
    n_volumes: int = 60,
    t_r: float = 2.0,
    space: str = "MNI152NLin2009cAsym",
    res: str | None = "2",
    voxel_size_mm: float = 4.0,
    seed: int = 0,
    templateflow_home: str | Path | None = None,
    n_dummy: int = 2,
    high_motion_volumes: Sequence[int] | None = None,
    aroma: bool = False,
    t1w_space: bool = False,
    anat_only_subjects: Sequence[str] = (),
    confounds_suffix: str = "timeseries",
    bold_extension: str = ".nii.gz",
    write_tr: bool = True,
    write_masks: bool = True,
    fmriprep_version: str = "23.2.3",
) -> Path:
    """Write a synthetic fMRIPrep derivatives dataset.

    Each run has a preprocessed BOLD series in ``space`` (float32, zeros outside
    the brain) whose signal mixes band-limited (0.01-0.1 Hz) network timecourses
    shared by homologous left/right cortical blobs, physiological noise concentrated
    in white matter and ventricles, slow drifts, motion artefacts driven by the
    realignment parameters written to the confounds, non-steady-state volumes and
    thermal noise (1% of baseline). The voxel grid covers the template's bounding box
    with ``voxel_size_mm`` voxels, so a 2 mm atlas must be resampled to it. Alongside:
    the JSON sidecar, the ``desc-brain_mask``, and ``desc-confounds_timeseries.tsv``
    / ``.json`` with fMRIPrep's columns (computed from the data where fMRIPrep
    computes them from the data) and CompCor metadata.

    Parameters
    ----------
    root : str or pathlib.Path
        Dataset folder (created if missing).
    subjects, sessions, tasks, acquisitions, runs : sequence
        Labels; ``None`` in ``sessions``, ``acquisitions`` or ``runs`` omits the entity.
    n_volumes : int, optional
        Volumes per run.
    t_r : float, optional
        Repetition time (s).
    space : str, optional
        Template space of the BOLD outputs.
    res : str or None, optional
        ``res-`` entity value (None omits it, as fMRIPrep 1.x and ``res-native`` do).
    voxel_size_mm : float, optional
        Isotropic voxel size of the BOLD grid (mm).
    seed : int, optional
        Seed of every random draw; a run's data depends only on the seed and its name.
    templateflow_home : str or pathlib.Path or None, optional
        TemplateFlow home to read template grids from; default: the wheel's skeleton.
    n_dummy : int, optional
        Non-steady-state volumes at the start of each run (flagged in the confounds).
    high_motion_volumes : sequence of int or None, optional
        Volumes with sudden head motion (framewise displacement ~1 mm) in every run;
        None picks three volumes (40% and 75% into the run); ``()`` means none.
    aroma : bool, optional
        Also write ``space-MNI152NLin6Asym_res-2_desc-smoothAROMAnonaggr_bold`` and
        ``aroma_motion_XX`` confounds.
    t1w_space : bool, optional
        Also write ``space-T1w`` BOLD outputs (and their masks).
    anat_only_subjects : sequence of str, optional
        Subjects with anatomical outputs only (no BOLD).
    confounds_suffix : {"timeseries", "regressors"}, optional
        ``"regressors"`` gives fMRIPrep 1.x names (``desc-confounds_regressors.tsv``).
    bold_extension : {".nii.gz", ".nii"}, optional
        Extension of BOLD and mask images.
    write_tr : bool, optional
        Write ``RepetitionTime`` into the BOLD sidecars.
    write_masks : bool, optional
        Write the BOLD ``desc-brain_mask`` images.
    fmriprep_version : str, optional
        Version written into ``dataset_description.json``.

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    ValueError
        On a label that is not alphanumeric, an out-of-range high-motion volume or an
        unknown option value.
    """
    root = Path(root).absolute()
    home = Path(templateflow_home) if templateflow_home is not None else None
    if confounds_suffix not in ("timeseries", "regressors"):
        raise ValueError(
            f"confounds_suffix must be 'timeseries' or 'regressors', not {confounds_suffix!r}."
        )
    if bold_extension not in (".nii.gz", ".nii"):
        raise ValueError(f"bold_extension must be '.nii.gz' or '.nii', not {bold_extension!r}.")
    if not 0 <= n_dummy < n_volumes:
        raise ValueError(f"n_dummy={n_dummy} must be in [0, n_volumes={n_volumes}).")
    spikes = (
        _default_spikes(n_volumes, n_dummy)
        if high_motion_volumes is None
        else tuple(int(v) for v in high_motion_volumes)
    )
    if any(not 0 < v < n_volumes for v in spikes):
        raise ValueError(f"high_motion_volumes {spikes} must lie in [1, {n_volumes}).")

    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "dataset_description.json", _dataset_description(fmriprep_version))
    grid = box_grid(space, voxel_size_mm, home)
    aroma_grid = box_grid(_AROMA_SPACE, voxel_size_mm, home) if aroma else None
    for subject in list(subjects) + list(anat_only_subjects):
        _write_anat(root, _check_label(subject, "subject"), space, res, grid)
    for run in _runs(subjects, sessions, tasks, acquisitions, runs):
        _write_run(
            root,
            run,
            grid=grid,
            aroma_grid=aroma_grid,
            n_volumes=n_volumes,
            t_r=t_r,
            space=space,
            res=res,
            seed=seed,
            n_dummy=n_dummy,
            spikes=spikes,
            t1w_space=t1w_space,
            confounds_suffix=confounds_suffix,
            extension=bold_extension,
            write_tr=write_tr,
            write_masks=write_masks,
        )
    return root


def _write_run(
    root: Path,
    run: _Run,
    *,
    grid,
    aroma_grid,
    n_volumes,
    t_r,
    space,
    res,
    seed,
    n_dummy,
    spikes,
    t1w_space,
    confounds_suffix,
    extension,
    write_tr,
    write_masks,
) -> None:
    """Write every output of one run (see :func:`make_fmriprep_dataset`)."""
    rng = np.random.default_rng([seed, zlib.crc32(run.prefix.encode())])
    signals = run_signals(rng, n_volumes, t_r, spikes, n_dummy)
    folder = run.folder(root)
    options = dict(extension=extension, write_tr=write_tr, write_mask=write_masks)

    data, masks = render_bold(grid, signals, rng, seed=seed, with_motion=True)
    _write_bold_outputs(
        folder,
        f"{run.prefix}_{_space_entities(space, res)}",
        to_volume(data, masks["brain"]),
        masks["brain"],
        grid[1],
        t_r,
        run.task,
        desc="preproc",
        **options,
    )
    frame, metadata = confounds_table(data, masks, signals, t_r, rng, aroma=aroma_grid is not None)
    stem = folder / f"{run.prefix}_desc-confounds_{confounds_suffix}"
    write_tsv(stem.with_suffix(".tsv"), frame)
    write_json(stem.with_suffix(".json"), metadata)

    if aroma_grid is not None:
        clean, aroma_masks = render_bold(aroma_grid, signals, rng, seed=seed, with_motion=False)
        _write_bold_outputs(
            folder,
            f"{run.prefix}_{_space_entities(_AROMA_SPACE, '2')}",
            to_volume(clean, aroma_masks["brain"]),
            aroma_masks["brain"],
            aroma_grid[1],
            t_r,
            run.task,
            desc="smoothAROMAnonaggr",
            extension=extension,
            write_tr=write_tr,
            write_mask=False,
        )
    if t1w_space:
        t1w_grid = _t1w_grid(grid)
        native, t1w_masks = render_bold(t1w_grid, signals, rng, seed=seed, with_motion=True)
        _write_bold_outputs(
            folder,
            f"{run.prefix}_space-T1w",
            to_volume(native, t1w_masks["brain"]),
            t1w_masks["brain"],
            t1w_grid[1],
            t_r,
            run.task,
            desc="preproc",
            **options,
        )
    logger.debug("wrote run %s", run.prefix)
