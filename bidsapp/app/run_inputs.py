"""One fMRIPrep run prepared for extraction, reading headers only: image, space, mask, TR.

Part of the app layer. :func:`prepare_run` decides which image is read (the preprocessed
BOLD, or fMRIPrep's ``desc-smoothAROMAnonaggr_bold`` for ICA-AROMA presets), in which space it
lies, which brain mask goes with it and its repetition time. The participant level needs the
space and voxel size to pick the atlas images. Problems raise :class:`ExtractionError`, whose
one-line message names the file at fault (:class:`RunExcluded` for runs left out on purpose).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bidsapp import image, stream
from bidsapp.app.config import DenoiseConfig
from bidsapp.app.status import one_line
from bidsapp.dataset.naming import GRID_ENTITIES
from bidsapp.dataset.query import BoldRun
from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)


_NIFTI = re.compile(r"\.nii(\.gz)?$")


_SPACE = re.compile(r"_space-([A-Za-z0-9]+)_")


class ExtractionError(BidsappError, RuntimeError):
    """A run that cannot be processed; the message names the file and the problem."""


class RunExcluded(ExtractionError):
    """A run left out on purpose, with status ``excluded``; the message says why.

    Raised when too little data is left after censoring (``--min-time``) or no residual
    degrees of freedom remain.
    """


@dataclass(frozen=True)
class RunInputs:
    """The files and facts one extraction needs, found by :func:`prepare_run`.

    Attributes
    ----------
    run : BoldRun
        The fMRIPrep run.
    bold : Path
        The image read: the preprocessed BOLD, or the ICA-AROMA image.
    space : str
        Template space of ``bold`` (``MNI152NLin6Asym`` for fMRIPrep's AROMA images).
    mask : Path or None
        Brain mask on the grid of ``bold``; None when there is none (AROMA images in a
        space without a brain mask).
    t_r : float
        Repetition time in seconds.
    n_volumes : int
        Volumes in ``bold``.
    voxel_size_mm : tuple of float
        Voxel size of ``bold`` in mm (to choose the atlas resolution).
    entities : dict of str to str
        Entities naming the outputs: the run's, with ``space`` of ``bold``.
    warnings : tuple of str
        Problems found so far that do not stop the run.
    """

    run: BoldRun
    bold: Path
    space: str
    mask: Path | None
    t_r: float
    n_volumes: int
    voxel_size_mm: tuple[float, float, float]
    entities: dict[str, str] = field(hash=False)
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Entities naming the run, e.g. ``sub-01_ses-1_task-rest_run-1``."""
        return self.run.name


def uses_aroma_image(denoise: DenoiseConfig) -> bool:
    """Whether a denoising setting reads fMRIPrep's ``desc-smoothAROMAnonaggr_bold``.

    Parameters
    ----------
    denoise : DenoiseConfig
        The denoising setting.

    Returns
    -------
    bool
        True for presets with the ``ica_aroma`` component at level ``full`` (as nilearn).

    Raises
    ------
    ExtractionError
        If a JSON preset cannot be read.
    """
    if denoise.confounds_columns or denoise.name == "none":
        return False
    parameters = preset_of(denoise)["parameters"]
    return "ica_aroma" in parameters["strategy"] and parameters.get("ica_aroma", "full") == "full"


def preset_of(denoise: DenoiseConfig) -> dict[str, Any]:
    """Load the preset of a denoising setting; :class:`ExtractionError` when it cannot."""
    from bidsapp import confounds as conf

    try:
        return conf.load_preset(denoise.name)
    except conf.ConfoundsError as err:
        raise ExtractionError(one_line(str(err))) from err


def _load_header(path: Path) -> nib.spatialimages.SpatialImage:
    import stat

    # Checked before nibabel opens it: a FIFO or device in a file's place would block.
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise ExtractionError(f"{path}: cannot read the NIfTI header ({err.strerror})") from err
    if not stat.S_ISREG(mode):
        raise ExtractionError(f"{path}: not a regular file, so not a NIfTI image")
    try:
        return image.load_checked_header(path)
    except image.ImageReadError as err:
        cause = err.__cause__
        raise ExtractionError(
            f"{path}: cannot read the NIfTI header ({one_line(cause)})"
        ) from cause
    except (stream.StreamError, image.HeaderError) as err:
        raise ExtractionError(one_line(err)) from err


def _header_repetition_time(img) -> float:
    """Return the header's repetition time in seconds (pixdim[4] in its time unit), or 0."""
    zooms = img.header.get_zooms()
    t_r = float(zooms[3]) if len(zooms) > 3 else 0.0
    unit = img.header.get_xyzt_units()[1]
    if unit == "msec":
        t_r /= 1000.0
    elif unit == "usec":
        t_r /= 1e6
    return t_r if np.isfinite(t_r) else 0.0


def _repetition_time(run: BoldRun, img, bold: Path, warnings_: list[str]) -> float:
    """Return the sidecar's repetition time (s), else the header's, if plausible.

    A sidecar value that differs from the header's by more than 1 % is used, with a
    warning of the run (fMRIPrep copies the sidecar's; a disagreement means one was edited).
    """
    from bidsapp.dataset.bold_sidecars import check_repetition_time
    from bidsapp.dataset.input_files import QueryError

    header_t_r = _header_repetition_time(img)
    if run.t_r is not None:
        t_r = float(run.t_r)
        if header_t_r > 0 and abs(header_t_r - t_r) > 0.01 * t_r:
            message = (
                f"RepetitionTime {t_r:g} s in {run.sidecar or 'the sidecar'} differs from the "
                f"NIfTI header's {header_t_r:g} s in {bold.name}; using the sidecar's"
            )
            logger.warning(message)
            warnings_.append(message)
        return t_r
    if not header_t_r > 0:
        raise ExtractionError(
            f"{bold}: no RepetitionTime in the JSON sidecar and none in the NIfTI header; "
            "add RepetitionTime (seconds) to the sidecar"
        )
    try:
        check_repetition_time(header_t_r, f"{bold} (NIfTI header; no sidecar value)")
    except QueryError as err:
        raise ExtractionError(f"{err}; add RepetitionTime (seconds) to the sidecar") from err
    message = (
        f"{run.preproc_bold.name}: no RepetitionTime in the JSON sidecar; using the NIfTI "
        f"header's {header_t_r:g} s"
    )
    logger.info(message)
    warnings_.append(message)
    return header_t_r


def _check_grid(mask: Path, img, bold: Path) -> None:
    mask_img = _load_header(mask)
    if mask_img.shape[:3] != img.shape[:3]:
        raise ExtractionError(
            f"{mask}: brain mask shape {tuple(mask_img.shape[:3])} differs from the shape "
            f"{tuple(img.shape[:3])} of {bold.name}; they must share one voxel grid"
        )
    if not image.same_affine(mask_img.affine, img.affine, atol=image.MASK_GRID_ATOL):
        shift = np.abs(mask_img.affine - img.affine).max()
        raise ExtractionError(
            f"{mask}: brain mask affine differs from that of {bold.name} (by up to "
            f"{shift:.3g}); they must share one voxel grid"
        )


def _sibling_mask(bold: Path) -> Path | None:
    """Return the ``desc-brain_mask`` fMRIPrep wrote beside an image (same grid), if any."""
    stem = _NIFTI.sub("", bold.name)
    stem = re.sub(r"_desc-[A-Za-z0-9]+_bold$", "", stem)
    for extension in (".nii.gz", ".nii"):
        candidate = bold.with_name(f"{stem}_desc-brain_mask{extension}")
        if candidate.is_file():
            return candidate
    return None


def prepare_run(run: BoldRun, denoise: DenoiseConfig) -> RunInputs:
    """Find the image, space, mask and repetition time of one run (headers only).

    For ICA-AROMA presets the image is fMRIPrep's ``desc-smoothAROMAnonaggr_bold``, which
    fMRIPrep writes in ``MNI152NLin6Asym`` whatever the other output spaces: its space comes
    from its file name, and its brain mask is the ``desc-brain_mask`` of the same space and
    resolution when fMRIPrep wrote one; otherwise regions are extracted without a mask, with
    a warning.

    Parameters
    ----------
    run : BoldRun
        The run, as :func:`bidsapp.dataset.query.find_runs` found it.
    denoise : DenoiseConfig
        Denoising setting (decides which image is read).

    Returns
    -------
    RunInputs
        What :func:`extract_run` reads.

    Raises
    ------
    ExtractionError
        If the image is missing or unreadable, not 4D, the brain mask is missing (for the
        preprocessed BOLD) or on another grid, or the repetition time is unknown.
    """
    if run.problem is not None:
        raise ExtractionError(run.problem)
    notes: list[str] = []
    aroma = uses_aroma_image(denoise)
    if aroma:
        if run.aroma_problem is not None:
            raise ExtractionError(run.aroma_problem)
        if run.aroma_bold is None:
            raise ExtractionError(
                f"{run.preproc_bold}: denoise strategy '{denoise.label}' needs fMRIPrep's "
                f"desc-smoothAROMAnonaggr_bold image of {run.name}, and there is none (run "
                "fMRIPrep < 23.1 with --use-aroma, or choose another --denoise-strategy)"
            )
        bold = run.aroma_bold
    else:
        bold = run.preproc_bold
    img = _load_header(bold)
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise ExtractionError(f"{bold}: expected a 4D BOLD series, got shape {img.shape}")
    t_r = _repetition_time(run, img, bold, notes)
    entities = dict(run.entities)
    if aroma:
        found = _SPACE.search(bold.name)
        if found is None:
            raise ExtractionError(f"{bold}: the file name has no space- entity")
        space = found.group(1)
        entities = {k: v for k, v in entities.items() if k not in GRID_ENTITIES}
        entities["space"] = space
        mask = _sibling_mask(bold)
        if mask is None:
            message = (
                f"{bold.name}: no desc-brain_mask in {space} beside it; regions are "
                "extracted without a brain mask (coverage counts every voxel)"
            )
            logger.info(message)
            notes.append(message)
    else:
        space = run.entities.get("space", "")
        mask = run.brain_mask
        if mask is None:
            raise ExtractionError(
                f"{bold}: no desc-brain_mask of the same space and resolution was found beside it"
            )
    if mask is not None:
        _check_grid(mask, img, bold)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return RunInputs(
        run=run,
        bold=bold,
        space=space,
        mask=mask,
        t_r=t_r,
        n_volumes=int(img.shape[3]),
        voxel_size_mm=zooms,  # type: ignore[arg-type]
        entities=entities,
        warnings=tuple(notes),
    )
