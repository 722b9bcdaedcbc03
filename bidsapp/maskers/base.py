"""The estimator machinery the labels maskers share (numerical core, maskers layer).

The maskers follow scikit-learn's estimator contract through scikit-learn itself:
:class:`LabelsEstimator` derives from ``BaseEstimator`` and ``TransformerMixin`` (so
``get_params``/``set_params``, ``clone``, ``Pipeline`` and metadata routing work as they
do for nilearn's maskers), and adds only what nilearn 0.12.1 adds: deprecated
``clean__*`` keyword arguments are parameters too. This module also turns the
``memory`` parameter into a joblib cache and wraps functions in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from joblib import Memory
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_memory

__all__ = ["LabelsEstimator", "cached", "memory_from_parameter"]


class LabelsEstimator(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """scikit-learn estimator whose deprecated ``clean__*`` keyword arguments are parameters.

    ``transform`` always returns arrays (``set_output`` is not supported), so
    scikit-learn is told not to wrap ``transform``/``fit_transform`` outputs. The
    ``clean__*`` arguments (stored in ``clean_kwargs`` by ``__init__``) are reported by
    ``get_params`` and accepted by ``set_params``, so that ``clone`` keeps them.
    """

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the estimator's parameters.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of parameters that are estimators,
            as ``<parameter>__<name>``.

        Returns
        -------
        dict
            Parameter names mapped to their values (the stored objects), deprecated
            ``clean__*`` arguments included.
        """
        params = super().get_params(deep=deep)
        params.update(getattr(self, "clean_kwargs", None) or {})
        return params

    def set_params(self, **params: Any):
        """Set parameters (``<parameter>__<name>`` reaches nested estimators).

        Parameters
        ----------
        **params : dict
            Parameter names and new values. Deprecated ``clean__*`` names are
            stored with the other deprecated keyword arguments.

        Returns
        -------
        self
            The estimator.

        Raises
        ------
        ValueError
            If a name is not a parameter of this estimator.
        """
        if hasattr(self, "clean_kwargs"):
            forwarded = {k: v for k, v in params.items() if k.startswith("clean__")}
            if forwarded:
                self.clean_kwargs = {**self.clean_kwargs, **forwarded}
                params = {k: v for k, v in params.items() if k not in forwarded}
        return super().set_params(**params)


def memory_from_parameter(memory: Any) -> Memory:
    """Return the joblib Memory for a ``memory`` parameter: a Memory, a directory or None.

    Parameters
    ----------
    memory : joblib.Memory, str, pathlib.Path or None
        The cache, the path of its directory, or None for no cache.

    Returns
    -------
    joblib.Memory
        ``memory`` itself when it is a Memory; a Memory without location for None.

    Raises
    ------
    ValueError
        If the parent directory of a cache directory does not exist.
    """
    if memory is None or isinstance(memory, Memory):
        return check_memory(memory)
    path = Path(memory).expanduser()
    if not path.parent.exists():
        raise ValueError(
            f"'memory': the parent directory of the cache directory '{memory}' does "
            "not exist; create it or pass another path."
        )
    return check_memory(str(path))


def cached(func, memory: Memory, func_level: int, memory_level: int, **kwargs):
    """Wrap ``func`` in ``memory.cache`` when the memory level asks for it.

    Parameters
    ----------
    func : callable
        The function to cache.
    memory : joblib.Memory
        The cache.
    func_level : int
        The memory level from which ``func`` is cached.
    memory_level : int
        The masker's memory level.
    **kwargs
        Passed to ``memory.cache`` (e.g. ``ignore``).

    Returns
    -------
    callable
        ``func`` or its cached version.
    """
    if memory.location is not None and memory_level >= func_level:
        return memory.cache(func, **kwargs)
    return func
