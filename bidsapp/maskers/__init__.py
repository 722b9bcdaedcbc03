"""Labels and maps maskers: region signals from NIfTI images, nilearn-compatible.

:class:`NiftiLabelsMasker`, :class:`MultiNiftiLabelsMasker`, :class:`NiftiMapsMasker`
and :class:`MultiNiftiMapsMasker` take the same parameters as nilearn 0.12.1's classes
of the same name and give the same signals and fitted attributes. They follow
scikit-learn's estimator contract through scikit-learn's ``BaseEstimator`` and
``TransformerMixin`` (so ``clone``, ``Pipeline`` and metadata routing work): ``__init__``
only stores parameters, ``fit`` validates them and sets attributes ending in ``_``, inputs
are never modified.

Per image, ``transform`` does: resample labels/mask to the data grid
(``resampling_target="data"``, nearest neighbour) or the data to the labels
grid (``"labels"``, cubic spline) -> optional Gaussian smoothing -> non-finite
values to 0 -> one value per region and volume (:mod:`bidsapp.regions`) ->
:func:`bidsapp.signal.clean` on the region signals. The steps before cleaning
run volume by volume in one streaming pass (:mod:`bidsapp.engine`): a
``.nii.gz`` is inflated once and the 4D array is never held in memory.

A maps masker's signals are, per volume, the least-squares coefficients of its maps
(:class:`bidsapp.regions.MapsReducer`, solved once and applied block by block in the
same pass); labels and maps atlases share one pass (:func:`.pipeline.stream_fitted`).

:func:`extract_labels_signals` gives, for several atlases in one pass over the
image, what one masker per atlas gives, through the same functions.

Modules: :mod:`.base` (estimator base, cache), :mod:`.settings` (parameter checks),
:mod:`.lut` (look-up tables), :mod:`.inputs` (input checks), :mod:`.fitting` (atlas and
mask on the extraction grid), :mod:`.pipeline` (stream then clean: the one code path),
:mod:`.maps_fitting` (maps and mask on the extraction grid), :mod:`.labels`, :mod:`.maps`
and :mod:`.multi` (the estimators), :mod:`.extraction` (several atlases).
"""

from sklearn.exceptions import NotFittedError

from bidsapp.maskers.extraction import (
    LabelsExtraction,
    LabelsSignals,
    RawLabelsSignals,
    extract_labels_signals,
    stream_labels_signals,
)
from bidsapp.maskers.labels import NiftiLabelsMasker
from bidsapp.maskers.maps import NiftiMapsMasker
from bidsapp.maskers.multi import MultiNiftiLabelsMasker, MultiNiftiMapsMasker

__all__ = [
    "LabelsExtraction",
    "LabelsSignals",
    "MultiNiftiLabelsMasker",
    "MultiNiftiMapsMasker",
    "NiftiLabelsMasker",
    "NiftiMapsMasker",
    "NotFittedError",
    "RawLabelsSignals",
    "extract_labels_signals",
    "stream_labels_signals",
]
