"""The atlas dataset inside the outputs: copies of the atlases the timeseries were made with.

Part of the dataset layer. :func:`copy_atlas` writes a small BIDS atlas dataset under
``OUTPUT_DIR/sourcedata/atlases`` (BEP038 layout, BIDS URIs ``bids:atlases:...``)::

    sourcedata/atlases/
      dataset_description.json
      atlas-<A>_description.json
      tpl-<space>/tpl-<space>_atlas-<A>[_res-<r>]_dseg.{nii.gz,tsv,json}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from bidsapp import __version__
from bidsapp.dataset.dataset_description import ATLAS_DATASET, BIDS_VERSION
from bidsapp.dataset.fileio import (
    atomic_write_bytes,
    ensure_directory,
    read_regular_bytes,
    write_if_changed,
)
from bidsapp.dataset.jsonio import json_text
from bidsapp.dataset.naming import bids_name, bids_uri, check_label
from bidsapp.dataset.tsvio import tsv_text


class AtlasLike(Protocol):
    """What :func:`copy_atlas` needs from an atlas (``bidsapp.dataset.atlas.Atlas`` satisfies it).

    Attributes
    ----------
    label : str
        Alphanumeric atlas label (the ``atlas-`` entity).
    space : str
        Template space of the atlas image (the ``tpl-`` entity of the copy).
    dseg : path-like
        Discrete segmentation NIfTI (``.nii`` or ``.nii.gz``).
    lut : pandas.DataFrame
        Look-up table with at least ``index`` and ``name`` columns.
    lut_path : path-like or None
        File the look-up table was read from, recorded as provenance.

    """

    label: str
    space: str
    dseg: str | os.PathLike[str]
    lut: pd.DataFrame
    lut_path: str | os.PathLike[str] | None


# --------------------------------------------------------------------------------------------
# Atlas dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtlasFiles:
    """Files of one atlas inside the output's atlas dataset.

    Attributes
    ----------
    root : Path
        Root of the atlas dataset (``OUTPUT_DIR/sourcedata/atlases``).
    image, lut, sidecar : Path
        ``tpl-<space>/tpl-<space>_atlas-<A>[_res-<r>]_dseg`` ``.nii[.gz]``, ``.tsv``, ``.json``.
    description : Path
        ``atlas-<A>_description.json`` at the atlas dataset root.

    """

    root: Path
    image: Path
    lut: Path
    sidecar: Path
    description: Path

    @property
    def node_files(self) -> list[str]:
        """BIDS URIs (``bids:atlases:...``) of the image and LUT, for relmat ``NodeFiles``."""
        return [bids_uri(p, root=self.root, dataset="atlases") for p in (self.image, self.lut)]


def _nifti_extension(path: Path) -> str:
    """Return ``.nii.gz`` or ``.nii`` for a NIfTI path, else raise."""
    for extension in (".nii.gz", ".nii"):
        if path.name.endswith(extension):
            return extension
    raise ValueError(f"Atlas image {path} is not a NIfTI file (.nii or .nii.gz).")


def _lut_table(lut: pd.DataFrame, label: str) -> pd.DataFrame:
    """LUT with ``index`` and ``name`` first, as BIDS ``dseg.tsv`` requires."""
    missing = {"index", "name"} - set(lut.columns)
    if missing:
        raise ValueError(
            f"The look-up table of atlas {label!r} lacks the column(s) {sorted(missing)}; "
            "a dseg.tsv needs 'index' and 'name'."
        )
    if lut["index"].duplicated().any():
        raise ValueError(f"The look-up table of atlas {label!r} has duplicate 'index' values.")
    others = [c for c in lut.columns if c not in ("index", "name")]
    return lut[["index", "name", *others]].reset_index(drop=True)


def _lut_column_descriptions(lut: pd.DataFrame) -> dict[str, Any]:
    """Describe LUT columns BIDS does not define (the validator warns about undefined ones)."""
    defined = {"index", "name", "abbreviation", "color", "mapping"}
    return {
        str(column): {"Description": f"'{column}' column of the atlas's look-up table."}
        for column in lut.columns
        if column not in defined
    }


def _write_unless_different(path: Path, data: bytes, *, overwrite: bool, what: str) -> None:
    """Write ``data`` if ``path`` is missing; keep an identical file; refuse a different one.

    A symbolic link at ``path`` is not read and is replaced (bidsapp never makes one).
    """
    try:
        old = read_regular_bytes(path)
    except FileNotFoundError:
        old = None
    else:
        if old == data:
            return
    if old is not None and not overwrite:
        raise FileExistsError(
            f"{path} already holds a different {what}: another atlas of this name was used "
            "before (or the atlas file changed). Pass --overwrite to replace it and recompute "
            "the runs made with it, or give this atlas another name."
        )
    atomic_write_bytes(path, data)


def _atlas_dataset_description() -> str:
    """JSON text of the atlas dataset's ``dataset_description.json``."""
    return json_text(
        {
            "Name": "Atlases used by bidsapp",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "bidsapp",
                    "Version": __version__,
                    "Description": "Copies of the atlases the parcel timeseries were made with.",
                }
            ],
        }
    )


def copy_atlas(
    output_dir: str | os.PathLike[str], atlas: AtlasLike, *, overwrite: bool = False
) -> AtlasFiles:
    """Copy an atlas image and LUT into the output's atlas dataset (BEP038 layout).

    Writes, under ``OUTPUT_DIR/sourcedata/atlases/``: ``dataset_description.json``,
    ``atlas-<A>_description.json`` (``AtlasName``, ``License``, plus the items of
    ``atlas.metadata`` if the atlas has such a mapping), and
    ``tpl-<space>/tpl-<space>_atlas-<A>[_res-<r>]_dseg.{nii.gz,tsv,json}`` (``res`` from an
    optional ``atlas.res``). This is the layout bids-validator accepts; XCP-D's older
    ``atlas-<A>/atlas-<A>_space-<space>_dseg`` layout is rejected. Idempotent: identical
    files are left alone; every write is atomic, so concurrent calls are safe.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    atlas : AtlasLike
        Atlas with ``label``, ``space``, ``dseg``, ``lut`` and ``lut_path``.
    overwrite : bool
        Replace an existing image or LUT of the same name whose content differs (the
        ``--overwrite`` option: e.g. a corrected local LUT).

    Returns
    -------
    AtlasFiles
        Paths of the copies and their BIDS URIs.

    Raises
    ------
    FileExistsError
        If a different image or LUT already has this name and ``overwrite`` is False; the
        message says to pass ``--overwrite``.
    LinkedPathError
        If a folder of the atlas dataset is a symbolic link.
    FileNotFoundError
        If the atlas image does not exist.
    ValueError
        For an invalid label or space, a non-NIfTI image or a LUT without ``index``/``name``.

    """
    label = check_label(atlas.label, entity="atlas")
    space = check_label(atlas.space, entity="template")
    source = Path(atlas.dseg)
    root = Path(output_dir) / ATLAS_DATASET
    entities = {"template": space, "atlas": label, "res": getattr(atlas, "res", None)}

    def dseg_path(extension: str) -> Path:
        return root / f"tpl-{space}" / bids_name(entities, suffix="dseg", extension=extension)

    files = AtlasFiles(
        root=root,
        image=dseg_path(_nifti_extension(source)),
        lut=dseg_path(".tsv"),
        sidecar=dseg_path(".json"),
        description=root / f"atlas-{label}_description.json",
    )
    lut_text = tsv_text(_lut_table(atlas.lut, label), path=files.lut)
    ensure_directory(output_dir, files.image.parent.relative_to(Path(output_dir)))
    write_if_changed(root / "dataset_description.json", _atlas_dataset_description())
    _write_unless_different(files.image, source.read_bytes(), overwrite=overwrite, what="image")
    _write_unless_different(files.lut, lut_text.encode(), overwrite=overwrite, what="LUT")
    sources = [Path(os.path.abspath(source)).as_uri()]
    if atlas.lut_path is not None:
        sources.append(Path(os.path.abspath(atlas.lut_path)).as_uri())
    sidecar = {
        "Description": f"Atlas {label} in {space}, as used by bidsapp.",
        "Sources": sources,
        **_lut_column_descriptions(atlas.lut),
    }
    write_if_changed(files.sidecar, json_text(sidecar))
    description = {
        "AtlasName": label,
        "License": "See the license of the atlas's original distribution.",
        **dict(getattr(atlas, "metadata", None) or {}),
    }
    write_if_changed(files.description, json_text(description))
    return files
