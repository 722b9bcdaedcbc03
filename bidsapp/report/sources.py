"""Resolving a run's ``Sources`` (BIDS URIs in its sidecar) into local files for the report.

Part of the report layer: ``bids:<dataset>:<path>`` URIs go through the output's
``DatasetLinks``; the atlas copy under ``sourcedata/atlases`` is found when not listed.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bidsapp.report.records import RunRecord, read_sidecar


def _uri_to_path(uri: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    return Path(urllib.request.url2pathname(parsed.path))


def _dataset_links(output_dir: Path) -> dict[str, str]:
    description = read_sidecar(output_dir / "dataset_description.json")
    links = description.get("DatasetLinks")
    return dict(links) if isinstance(links, dict) else {}


def resolve_source(
    source: str, output_dir: str | os.PathLike[str], bids_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """Turn one entry of a sidecar's ``Sources`` into a local path.

    ``bids:<dataset>:<path>`` URIs are resolved through the output's
    ``dataset_description.json`` ``DatasetLinks`` (``file://`` URIs or paths relative to the
    output dataset); ``bids::<path>`` points into the output dataset itself. When
    ``bids_dir`` is given, files of the ``preprocessed`` dataset are looked up there first
    (the inputs may have moved since the participant level ran).

    Parameters
    ----------
    source : str
        A BIDS URI, a ``file://`` URI or a path.
    output_dir : path-like
        Output dataset root.
    bids_dir : path-like, optional
        Current location of the fMRIPrep dataset.

    Returns
    -------
    Path or None
        The file, when it exists; None otherwise.
    """
    output_dir = Path(output_dir)
    candidates: list[Path] = []
    if source.startswith("bids:"):
        _, dataset, relative = source.split(":", 2)
        if dataset == "":
            candidates.append(output_dir / relative)
        else:
            if dataset == "preprocessed" and bids_dir is not None:
                candidates.append(Path(bids_dir) / relative)
            link = _dataset_links(output_dir).get(dataset)
            if link:
                root = _uri_to_path(link) if "://" in link else Path(link)
                candidates.append((root if root.is_absolute() else output_dir / root) / relative)
    elif source.startswith("file:"):
        candidates.append(_uri_to_path(source))
    else:
        candidates.append(Path(source))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


@dataclass
class RunSources:
    """Local paths of the files a run's outputs were made from (None when not found)."""

    bold: Path | None = None
    mask: Path | None = None
    confounds: Path | None = None
    atlas: Path | None = None
    lut: Path | None = None
    missing: list[str] = field(default_factory=list)


def find_sources(record: RunRecord, output_dir: Path, bids_dir: Path | None) -> RunSources:
    """Local BOLD, mask, confounds, atlas and look-up table of a record's ``Sources``."""
    inputs = RunSources()
    for source in record.sidecar.get("Sources", []) or []:
        name = str(source).rsplit("/", 1)[-1]
        if re.search(r"_dseg\.nii(\.gz)?$", name):
            slot = "atlas"
        elif "desc-brain_mask" in name or name.endswith("_mask.nii.gz"):
            slot = "mask"
        elif re.search(r"_(timeseries|regressors)\.tsv$", name):
            slot = "confounds"
        elif re.search(r"_bold\.nii(\.gz)?$", name):
            slot = "bold"
        else:
            continue
        path = resolve_source(str(source), output_dir, bids_dir)
        if path is None:
            inputs.missing.append(str(source))
        elif getattr(inputs, slot) is None:
            setattr(inputs, slot, path)
    if inputs.atlas is None:
        space = record.entities.get("space", "*")
        found = sorted(
            (output_dir / "sourcedata" / "atlases").glob(
                f"tpl-{space}/*_atlas-{record.atlas}_*dseg.nii*"
            )
        )
        inputs.atlas = found[0] if found else None
    if inputs.atlas is not None:
        stem = re.sub(r"\.nii(\.gz)?$", "", inputs.atlas.name)
        lut = inputs.atlas.with_name(f"{stem}.tsv")
        inputs.lut = lut if lut.is_file() else None
    return inputs


def boldref_of(bold: Path) -> Path | None:
    """Return fMRIPrep's reference volume beside a preprocessed BOLD, if there is one."""
    name = bold.name
    for pattern in ("_desc-preproc_bold", "_desc-smoothAROMAnonaggr_bold"):
        if pattern in name:
            candidate = bold.with_name(name.replace(pattern, "_boldref"))
            if candidate.is_file():
                return candidate
    return None
