"""Small NIfTI files written for the stream and hostile-input tests."""

from __future__ import annotations

import nibabel as nib
import numpy as np

SHAPE = (6, 7, 5, 23)


def write_float32(path, data):
    img = nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(img, path)
    return nib.load(path)
