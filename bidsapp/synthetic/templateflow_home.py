"""A synthetic TemplateFlow home: the skeleton archive with real atlas images drawn in.

Part of the synthetic data. :func:`make_templateflow_home` unpacks the skeleton archive
shipped inside the ``templateflow`` wheel (real ``dseg.tsv`` look-up tables, zero-byte images)
and replaces the requested atlas images with synthetic parcellations drawn on TemplateFlow's
true grid for each resolution.
"""

from __future__ import annotations

import logging
import re
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bidsapp.synthetic.anatomy import skeleton_zip_path, template_grid, tissue_masks
from bidsapp.synthetic.files import save_nifti
from bidsapp.synthetic.parcellation import smallest_int_dtype, synthetic_parcellation

logger = logging.getLogger(__name__)


def _extract_skeleton(root: Path) -> None:
    """Unpack the skeleton archive into ``root`` without overwriting existing files.

    Existing files may be real images written by an earlier call: leave them.
    """
    with zipfile.ZipFile(skeleton_zip_path()) as zipped:
        for member in zipped.infolist():
            target = root / member.filename
            if target.exists():
                continue
            zipped.extract(member, root)


def _tf_name(template: str, *, resolution: int | None = None, **entities: str | None) -> str:
    """Build a TemplateFlow file name (``suffix`` and ``extension`` in ``entities``)."""
    parts = [f"tpl-{template}"]
    if resolution is not None:
        parts.append(f"res-{int(resolution):02d}")
    for key in ("atlas", "desc"):
        if entities.get(key):
            parts.append(f"{key}-{entities[key]}")
    return "_".join(parts) + f"_{entities['suffix']}{entities['extension']}"


def _skeleton_lut(root: Path, template: str, atlas: str, desc: str | None) -> Path:
    """Find an atlas look-up table in a TemplateFlow home (with, then without desc)."""
    folder = root / f"tpl-{template}"
    candidates = [_tf_name(template, atlas=atlas, desc=desc, suffix="dseg", extension=".tsv")]
    candidates += [
        path.name for path in sorted(folder.glob(f"tpl-{template}_res-*_atlas-{atlas}_*dseg.tsv"))
    ]
    candidates.append(_tf_name(template, atlas=atlas, suffix="dseg", extension=".tsv"))
    for name in candidates:
        if (folder / name).is_file() and (folder / name).stat().st_size > 0:
            return folder / name
    raise ValueError(
        f"No dseg.tsv look-up table for atlas {atlas!r} (desc {desc!r}) in {folder}; "
        "the demo can only draw atlases whose LUT TemplateFlow ships."
    )


def _available_atlases(root: Path, template: str) -> list[str]:
    """List ``NAME:DESC`` of the dseg images of a template (for error messages)."""
    found = set()
    for path in (root / f"tpl-{template}").glob("*_atlas-*_dseg.nii.gz"):
        atlas = re.search(r"_atlas-([A-Za-z0-9]+)", path.name).group(1)
        desc = re.search(r"_desc-([A-Za-z0-9]+)", path.name)
        found.add(f"{atlas}:{desc.group(1)}" if desc else atlas)
    return sorted(found)


def make_templateflow_home(
    root: str | Path,
    atlases: Iterable[tuple[str, str | None]] = (("Schaefer2018", "400Parcels7Networks"),),
    template: str = "MNI152NLin2009cAsym",
    resolutions: Iterable[int] = (2,),
    *,
    seed: int = 0,
) -> Path:
    """Build an offline TemplateFlow home with real images for a few atlases.

    The skeleton shipped in the ``templateflow`` wheel is unpacked into ``root``
    (real look-up tables, zero-byte placeholders for every image, as TemplateFlow
    itself does); then, for each requested atlas and resolution, the placeholder
    ``dseg`` image is replaced by a synthetic parcellation on TemplateFlow's grid for
    that resolution, using the label indices of the atlas's real look-up table. The
    template's ``desc-brain_mask`` is written at the same resolutions. Calling it
    again on the same ``root`` (e.g. for another template) keeps earlier images.

    Parameters
    ----------
    root : str or pathlib.Path
        Directory to use as ``TEMPLATEFLOW_HOME`` (created if missing).
    atlases : iterable of (str, str or None)
        ``(atlas, desc)`` pairs present in the skeleton, e.g.
        ``("Schaefer2018", "400Parcels7Networks")`` or ``("HOSPA", "th25")`` for
        ``MNI152NLin6Asym``.
    template : str, optional
        Template identifier.
    resolutions : iterable of int, optional
        TemplateFlow resolution indices to write (``res-02`` is 2 mm for MNI templates).
    seed : int, optional
        Seed of the parcel placement.

    Returns
    -------
    pathlib.Path
        ``root``, ready to be used as ``TEMPLATEFLOW_HOME``.

    Raises
    ------
    ValueError
        If an atlas, resolution or template is not part of TemplateFlow's skeleton.
    """
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    _extract_skeleton(root)
    folder = root / f"tpl-{template}"
    if not folder.is_dir():
        raise ValueError(f"Template {template!r} is not in the TemplateFlow skeleton.")
    for resolution in resolutions:
        shape, affine = template_grid(template, resolution, root)
        mask = tissue_masks(shape, affine)["brain"].astype(np.uint8)
        mask_name = _tf_name(
            template, resolution=resolution, desc="brain", suffix="mask", extension=".nii.gz"
        )
        save_nifti(mask, affine, folder / mask_name)
    for atlas, desc in atlases:
        lut = pd.read_csv(_skeleton_lut(root, template, atlas, desc), sep="\t")
        name_seed = [seed, zlib.crc32(f"{template}/{atlas}/{desc}".encode())]
        for resolution in resolutions:
            target = folder / _tf_name(
                template,
                resolution=resolution,
                atlas=atlas,
                desc=desc,
                suffix="dseg",
                extension=".nii.gz",
            )
            if not target.exists():
                raise ValueError(
                    f"{target.name} is not part of TemplateFlow's skeleton in {folder}; "
                    f"atlases there: {', '.join(_available_atlases(root, template))}."
                )
            shape, affine = template_grid(template, resolution, root)
            labels = synthetic_parcellation(
                lut, shape, affine, cortical=atlas.startswith("Schaefer"), rng_seed=name_seed
            )
            dtype = smallest_int_dtype(int(labels.max(initial=0)))
            save_nifti(labels.astype(dtype), affine, target)
            logger.debug("wrote %s", target)
    return root
