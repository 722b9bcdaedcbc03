"""bidsapp: parcel timeseries from fMRIPrep derivatives.

The public Python API mirrors nilearn's labels maskers (:mod:`bidsapp.maskers`),
signal cleaning (:mod:`bidsapp.signal`) and fMRIPrep confound loading
(:mod:`bidsapp.confounds`), without depending on nilearn.
"""

__version__ = "0.1.0"
