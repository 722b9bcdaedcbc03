"""Synthetic fMRIPrep derivatives and TemplateFlow homes, built offline in seconds.

Used by the ``bidsapp demo`` command (:mod:`bidsapp.app.demo`) and by the test suite; it
imports nothing of the app or the CLI. Two builders, re-exported here:

- :func:`make_templateflow_home` (:mod:`bidsapp.synthetic.templateflow_home`): a TemplateFlow
  home whose atlas images are synthetic parcellations on TemplateFlow's true grids.
- :func:`make_fmriprep_dataset` (:mod:`bidsapp.synthetic.fmriprep`): an fMRIPrep-like
  derivatives dataset.

The modules: ``anatomy`` (grids and tissues), ``parcellation``, ``bold`` (signals),
``confounds``, ``files`` (writers), ``templateflow_home``, ``fmriprep``.
"""

from __future__ import annotations

from bidsapp.synthetic.anatomy import template_grid, tissue_masks
from bidsapp.synthetic.fmriprep import make_fmriprep_dataset
from bidsapp.synthetic.templateflow_home import make_templateflow_home

__all__ = ["make_fmriprep_dataset", "make_templateflow_home", "template_grid", "tissue_masks"]
