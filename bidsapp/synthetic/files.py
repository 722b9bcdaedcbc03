"""Writers of the synthetic data's files: NIfTI images, JSON sidecars, TSV tables.

Part of the synthetic data; plain writes (the data is rebuilt, never resumed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, *, t_r: float | None = None):
    """Write a NIfTI-1 image with scanner-aligned q/sform and mm (and s) units."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    if t_r is not None:
        image.header.set_zooms(image.header.get_zooms()[:3] + (float(t_r),))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def write_json(path: Path, content: Mapping) -> None:
    """Write pretty JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def write_tsv(path: Path, frame: pd.DataFrame) -> None:
    """Write a TSV with fMRIPrep's ``n/a`` for missing values."""
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a")
