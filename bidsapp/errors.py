"""The one family of exceptions and warnings that bidsapp raises and issues.

Every error bidsapp raises on purpose derives from :class:`BidsappError`, and every
warning from :class:`BidsappWarning`, so a caller can catch or filter the whole family,
or one kind, by class instead of by message text. The specific errors live beside the
code that raises them (``image.HeaderError``, ``dataset.query.NoRunsFoundError``, ...)
and keep the built-in bases they had (``ValueError``, ``OSError``...), so code written
against those bases still works. The warning classes are all here, because one warning
kind is issued from several layers.

This module imports nothing from bidsapp: every layer may import it.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

__all__ = [
    "BidsappError",
    "BidsappWarning",
    "DataWarning",
    "ParameterWarning",
    "FilterWarning",
    "RegionWarning",
    "ReportWarning",
    "ParameterDeprecationWarning",
    "ParameterFutureWarning",
    "NonFiniteWarning",
    "AllVolumesCensoredWarning",
    "warn",
]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class BidsappError(Exception):
    """Base class of the errors bidsapp raises on purpose."""


class BidsappWarning(UserWarning):
    """Base class of the warnings bidsapp issues."""


class DataWarning(BidsappWarning):
    """The input data are unusual (non-finite values, a missing sform, a lossy cast)."""


class ParameterWarning(BidsappWarning):
    """A parameter is ignored, changed, deprecated or likely to give surprising results."""


class FilterWarning(ParameterWarning):
    """A temporal filter setting was adjusted, ignored or cannot do what was asked."""


class RegionWarning(BidsappWarning):
    """Regions or their names were dropped, padded or changed to fit the data."""


class ReportWarning(BidsappWarning):
    """A report could not show something it was asked to show."""


class ParameterDeprecationWarning(ParameterWarning, DeprecationWarning):
    """A parameter value is deprecated (as in nilearn 0.12.1); still a DeprecationWarning."""


class ParameterFutureWarning(ParameterWarning, FutureWarning):
    """A parameter's default will change (as in nilearn 0.13); still a FutureWarning."""


class NonFiniteWarning(DataWarning, RuntimeWarning):
    """NaN or infinite values make a computation ill-defined; still a RuntimeWarning."""


class AllVolumesCensoredWarning(DataWarning, RuntimeWarning):
    """Every volume of a run would be censored; still a RuntimeWarning."""


def warn(message: str, category: type[Warning] = BidsappWarning) -> None:
    """Issue a warning attributed to the first caller outside the bidsapp package.

    Parameters
    ----------
    message : str
        The warning text.
    category : type of Warning, default=BidsappWarning
        The warning class.

    Notes
    -----
    Attributing the warning to the user's line (not to the bidsapp line that issues
    it) is what makes Python's default "once per location" filter useful, and is what
    nilearn does with its ``find_stack_level``.
    """
    frame = inspect.currentframe()
    level = 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(
        _PACKAGE_DIR
    ):
        frame = frame.f_back
        level += 1
    del frame
    warnings.warn(message, category, stacklevel=level)
