"""Clean region timeseries: censor, detrend, filter, regress out confounds, standardize.

Pure numpy/scipy re-implementation of the behaviour of ``nilearn.signal`` as of nilearn
0.12.1 (which the test-suite uses as its numerical oracle). Time is always the first axis:
``signals`` has shape ``(n_timepoints, n_signals)``. Part of the numerical core.

Modules: :mod:`.cleaning` (:func:`clean`, the order of its steps), :mod:`.scaling`
(detrending, standardization, high-variance confounds), :mod:`.filters` (Butterworth and
cosine drift), :mod:`.censoring` (sample masks, interpolation of censored volumes),
:mod:`.inputs` (input checks, confounds files).
"""

from bidsapp.errors import FilterWarning
from bidsapp.signal.censoring import AllVolumesRemovedError
from bidsapp.signal.cleaning import clean
from bidsapp.signal.filters import butterworth, cosine_drift
from bidsapp.signal.scaling import detrend_signal, high_variance_confounds, standardize_signal

__all__ = [
    "AllVolumesRemovedError",
    "FilterWarning",
    "butterworth",
    "clean",
    "cosine_drift",
    "detrend_signal",
    "high_variance_confounds",
    "standardize_signal",
]
