"""Resolve a parcellation (TemplateFlow atlas or local dseg file) into an :class:`Atlas`.

Part of the dataset layer: the entry point (:func:`get_atlas`). TemplateFlow atlases are
found by :mod:`bidsapp.dataset.atlas_templateflow` (never downloading unless allowed);
local files must declare their template space (:func:`local_atlas_space`); the image and
look-up table are checked by :mod:`bidsapp.dataset.atlas_checks`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bidsapp.dataset.atlas_checks import (
    check_labels_image,
    check_labels_in_lut,
    lut_region_ids,
    read_lut,
)
from bidsapp.dataset.atlas_spec import AtlasError, AtlasSpec, atlas_label, parse_atlas_spec
from bidsapp.dataset.atlas_templateflow import (
    resolve_templateflow_home,
    templateflow_dseg,
    templateflow_lut,
)
from bidsapp.dataset.naming import LABEL_RE, NIFTI_RE, loose_entities

logger = logging.getLogger(__name__)


_TEMPLATEFLOW = "templateflow"
_LOCAL = "local"

#: Spaces that belong to one subject (or one run) rather than to a template: BIDS's
#: individual coordinate systems and fMRIPrep's non-standard output spaces. A local atlas
#: in one of them would be another subject's anatomy on every other subject's grid.
NATIVE_SPACES = frozenset(
    s.lower()
    for s in (
        "T1w", "T2w", "T1map", "T2map", "T2star", "FLAIR", "PD", "PDw", "PDT2", "angio",
        "anat", "func", "boldref", "sbref", "run", "session", "fsnative", "individual",
        "scanner", "orig", "ACPC", "Pixels", "native",
    )
)  # fmt: skip


@dataclass(frozen=True)
class Atlas:
    """A labels image with its look-up table, ready for region extraction.

    Attributes
    ----------
    name : str
        Atlas name, e.g. ``"Schaefer2018"``.
    desc : str or None
        Variant, e.g. ``"400Parcels7Networks"``.
    label : str
        Alphanumeric ``atlas-`` entity value for outputs, e.g.
        ``"Schaefer2018400Parcels7Networks"``.
    space : str
        Template space of the labels image.
    dseg : pathlib.Path
        Labels image (3D, integer labels, 0 = background).
    lut : pandas.DataFrame
        Look-up table sorted by ``index`` (int) with ``name`` (str) and any other
        columns of the file.
    lut_path : pathlib.Path
        File the look-up table was read from.
    source : str
        ``"templateflow"`` or ``"local"``.
    resolution : int or None
        TemplateFlow ``res-`` index of ``dseg``, if any.
    """

    name: str
    desc: str | None
    label: str
    space: str
    dseg: Path
    lut: pd.DataFrame = field(compare=False, repr=False)
    lut_path: Path
    source: str
    resolution: int | None = None

    @property
    def res(self) -> str | None:
        """TemplateFlow ``res-`` label of ``dseg`` (e.g. ``"02"``), or None."""
        return None if self.resolution is None else f"{self.resolution:02d}"


def region_ids(atlas: Atlas) -> list[int]:
    """Return the atlas's region indices from its look-up table, background (0) excluded."""
    return lut_region_ids(atlas.lut)


def region_names(atlas: Atlas) -> list[str]:
    """Return the atlas's region names in index order, background (0) excluded."""
    regions = atlas.lut[atlas.lut["index"] != 0]
    return [str(name) for name in regions["name"]]


# ------------------------------------------------------------------ entry


def local_atlas_space(path: str | os.PathLike, atlas_space: str | None = None) -> str:
    """Return the template space a local atlas declares.

    A local labels image carries no trustworthy space of its own (an affine says where the
    voxels are, not in which template), so it must be declared: by a ``space-<label>`` (or
    TemplateFlow ``tpl-<label>``) entity in its file name, or by ``atlas_space``
    (``--atlas-space``) when the name has none.

    Parameters
    ----------
    path : str or os.PathLike
        The local ``*_dseg.nii[.gz]`` file (only its name is read).
    atlas_space : str or None, optional
        Space declared by the caller for atlases whose name has no space.

    Returns
    -------
    str
        The declared template space.

    Raises
    ------
    AtlasError
        If no space is declared, the name and ``atlas_space`` (or ``space-`` and ``tpl-``)
        disagree, or the space is subject-specific (:data:`NATIVE_SPACES`, e.g. ``T1w``):
        one atlas file cannot hold every subject's native anatomy.
    """
    path = Path(path)
    entities = loose_entities(path.name)
    named = {entities[key] for key in ("space", "tpl") if key in entities}
    if len(named) > 1:
        raise AtlasError(
            f"Local atlas {path} names two spaces ({', '.join(sorted(named))}); rename it "
            "with one space-<label> entity."
        )
    if named and atlas_space is not None and atlas_space not in named:
        raise AtlasError(
            f"Local atlas {path} is named for space {next(iter(named))} but --atlas-space "
            f"says {atlas_space}; remove --atlas-space or rename the file."
        )
    declared = next(iter(named), atlas_space)
    if declared is None:
        raise AtlasError(
            f"Local atlas {path} does not declare its template space: put a space-<label> "
            f"entity in its file name (e.g. space-MNI152NLin2009cAsym_atlas-X_dseg.nii.gz) "
            "or pass --atlas-space <label>. It is never assumed to be the space of the BOLD."
        )
    if declared.lower() in NATIVE_SPACES:
        raise AtlasError(
            f"Local atlas {path} is in space {declared}, which is specific to one subject: "
            "a single atlas file cannot be used for every subject's native grid. Use an "
            "atlas in a template space and process the template-space BOLD outputs (--space)."
        )
    return declared


def get_atlas(
    spec: str | os.PathLike | AtlasSpec,
    *,
    space: str,
    voxel_size_mm: float | Sequence[float] | None = None,
    lut_path: str | os.PathLike | None = None,
    templateflow_home: str | os.PathLike | None = None,
    allow_download: bool = False,
    atlas_space: str | None = None,
) -> Atlas:
    """Resolve an atlas request into a validated :class:`Atlas`.

    Parameters
    ----------
    spec : str or os.PathLike or AtlasSpec
        ``NAME[:DESC]`` of a TemplateFlow atlas, or a local ``*_dseg.nii[.gz]`` path
        (see :func:`~bidsapp.dataset.atlas_spec.parse_atlas_spec`).
    space : str
        Template space of the BOLD data; TemplateFlow atlases are taken in that space. A
        local file must declare its space (see :func:`local_atlas_space`) and that space
        must be ``space``: atlases are never resampled from one space onto another's grid.
    voxel_size_mm : float or sequence of 3 floats or None, optional
        BOLD voxel size (mm). The TemplateFlow resolution with the closest voxel size
        is chosen (finer on ties; the finest when None); if it is not downloaded,
        the closest downloaded one is used instead, with a warning.
    lut_path : str or os.PathLike or None, optional
        Look-up table to use instead of the atlas's own (TemplateFlow's ``dseg.tsv``,
        or the local file's sibling with the same stem).
    templateflow_home : str or os.PathLike or None, optional
        See :func:`~bidsapp.dataset.atlas_templateflow.resolve_templateflow_home`.
    allow_download : bool, optional
        Let TemplateFlow download files that are not in the home yet. Off by
        default so an offline run fails at once with instructions instead of trying
        the network.
    atlas_space : str or None, optional
        Space of a local atlas whose file name has no ``space-`` entity (the
        ``--atlas-space`` option); ignored for TemplateFlow atlases.

    Returns
    -------
    Atlas
        Labels image and look-up table, both validated.

    Raises
    ------
    AtlasError
        If the atlas cannot be found or fetched, or its image or look-up table is
        invalid; the message names the files, the TemplateFlow home in use and what
        to do.
    """
    parsed = parse_atlas_spec(spec)
    if not LABEL_RE.fullmatch(str(space)):
        raise AtlasError(f"Space {space!r} is not a valid template name (letters and digits).")
    if parsed.path is not None:
        atlas = _local_atlas(parsed, space, lut_path, atlas_space)
    else:
        atlas = _templateflow_atlas(
            parsed, space, voxel_size_mm, lut_path, templateflow_home, allow_download
        )
    labels = check_labels_image(atlas.dseg)
    check_labels_in_lut(atlas.dseg, labels, atlas.lut, atlas.lut_path)
    logger.info(
        "Atlas %s: %s (%d regions), look-up table %s",
        atlas.label,
        atlas.dseg,
        len(region_ids(atlas)),
        atlas.lut_path,
    )
    return atlas


def _templateflow_atlas(
    spec: AtlasSpec, space, voxel_size_mm, lut_path, templateflow_home, allow_download
) -> Atlas:
    """Build an Atlas from the TemplateFlow home."""
    home = resolve_templateflow_home(templateflow_home)
    dseg, resolution, desc = templateflow_dseg(spec, space, home, voxel_size_mm, allow_download)
    if lut_path is None:
        lut_path = templateflow_lut(spec, desc, space, resolution, home, allow_download)
    lut_path = Path(lut_path).absolute()
    return Atlas(
        name=spec.name,
        desc=desc,
        label=atlas_label(spec.name, desc),
        space=space,
        dseg=dseg,
        lut=read_lut(lut_path),
        lut_path=lut_path,
        source=_TEMPLATEFLOW,
        resolution=resolution,
    )


def _local_atlas(spec: AtlasSpec, space: str, lut_path, atlas_space: str | None) -> Atlas:
    """Build an Atlas from a local dseg file and its sibling (or given) LUT."""
    path = spec.path
    if not path.is_file():
        raise AtlasError(f"Local atlas {path} does not exist; pass an existing *_dseg.nii.gz.")
    entities = loose_entities(path.name)
    file_space = local_atlas_space(path, atlas_space)
    if file_space != space:
        raise AtlasError(
            f"Local atlas {path} is in space {file_space} but the BOLD data are in {space}; "
            f"it is not resampled across spaces: use an atlas in {space} (or process the "
            f"{file_space} outputs)."
        )
    if lut_path is None:
        lut_path = path.with_name(NIFTI_RE.sub("", path.name) + ".tsv")
        if not lut_path.is_file():
            raise AtlasError(
                f"Local atlas {path} has no look-up table: expected {lut_path} (same name, "
                ".tsv, with 'index' and 'name' columns); or pass lut_path."
            )
    lut_path = Path(lut_path).absolute()
    res = entities.get("res")
    return Atlas(
        name=spec.name,
        desc=spec.desc,
        label=atlas_label(spec.name, spec.desc),
        space=space,
        dseg=path,
        lut=read_lut(lut_path),
        lut_path=lut_path,
        source=_LOCAL,
        resolution=int(res) if res is not None and res.isdigit() else None,
    )
