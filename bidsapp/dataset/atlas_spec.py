"""An atlas request: a TemplateFlow ``NAME[:DESC]`` or a local file, parsed and labelled.

Part of the dataset layer; the errors of every atlas module (:class:`AtlasError`) live here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bidsapp.dataset.naming import LABEL_RE, NIFTI_RE, loose_entities
from bidsapp.errors import BidsappError


class AtlasError(BidsappError, ValueError):
    """An atlas cannot be found, fetched or used; the message says what to do."""


@dataclass(frozen=True)
class AtlasSpec:
    """A parsed atlas request: a TemplateFlow ``NAME[:DESC]`` or a local file.

    Attributes
    ----------
    name : str
        Atlas name (TemplateFlow ``atlas-`` entity), or the local file's name.
    desc : str or None
        TemplateFlow ``desc-`` entity, e.g. ``"400Parcels7Networks"``.
    path : pathlib.Path or None
        Local ``*_dseg.nii[.gz]`` file; None for TemplateFlow atlases.
    """

    name: str
    desc: str | None = None
    path: Path | None = None


# ---------------------------------------------------------------- parsing


def parse_atlas_spec(spec: str | os.PathLike | AtlasSpec) -> AtlasSpec:
    """Parse an atlas request.

    Parameters
    ----------
    spec : str or os.PathLike or AtlasSpec
        ``NAME`` or ``NAME:DESC`` for TemplateFlow (``"Schaefer2018:400Parcels7Networks"``),
        or a path to a local ``*_dseg.nii[.gz]`` (anything ending in ``.nii``/``.nii.gz``
        or containing a path separator is a path).

    Returns
    -------
    AtlasSpec
        The parsed request; local paths are made absolute (not checked here).

    Raises
    ------
    AtlasError
        If the name or description is not alphanumeric.
    """
    if isinstance(spec, AtlasSpec):
        return spec
    text = os.fspath(spec)
    if isinstance(spec, os.PathLike) or NIFTI_RE.search(text) or "/" in text or os.sep in text:
        path = Path(text).expanduser().absolute()
        entities = loose_entities(path.name)
        name = entities.get("atlas") or _sanitize(NIFTI_RE.sub("", path.name).removesuffix("_dseg"))
        return AtlasSpec(name=name, desc=entities.get("desc"), path=path)
    name, _, desc = text.partition(":")
    for part, what in ((name, "name"), (desc, "description")):
        if part and not LABEL_RE.fullmatch(part):
            raise AtlasError(
                f"Atlas {what} {part!r} in {text!r} is not valid: use NAME[:DESC] with "
                "letters and digits only (e.g. Schaefer2018:400Parcels7Networks), or a "
                "path to a local *_dseg.nii.gz file."
            )
    if not name:
        raise AtlasError(f"Atlas {text!r} has no name: use NAME[:DESC] or a path.")
    return AtlasSpec(name=name, desc=desc or None)


def _sanitize(text: str) -> str:
    """Keep letters and digits only (BIDS label)."""
    return re.sub(r"[^A-Za-z0-9]", "", text) or "atlas"


def atlas_label(name: str, desc: str | None) -> str:
    """Return the alphanumeric ``atlas-`` entity value for an atlas (name + desc)."""
    return _sanitize(name + (desc or ""))


def spec_text(spec: AtlasSpec) -> str:
    """Render a spec as the user would write it."""
    if spec.path is not None:
        return str(spec.path)
    return spec.name + (f":{spec.desc}" if spec.desc else "")
