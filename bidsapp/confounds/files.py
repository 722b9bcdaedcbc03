"""The fMRIPrep confounds files of an image: finding them, reading them.

The one naming rule the core knows: fMRIPrep writes ``<entities>_desc-confounds_timeseries.tsv``
(``_regressors.tsv`` before 20.2) and its JSON sidecar beside a preprocessed image, named
with some of the image's entities in the image's order (:func:`find_confounds_file`);
the image names each strategy needs (:func:`check_image_name`). The TSV and sidecar
readers refuse malformed files with a :class:`ConfoundsError` naming the file. Part of the
numerical core, confounds layer.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd

from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)


PathType: TypeAlias = "str | PathLike[str]"


class ConfoundsError(BidsappError, ValueError):
    """A confounds file, its JSON sidecar or a preset cannot be used.

    The message names the file and what is wrong with it.
    """


def is_legacy_header(columns: Sequence[str]) -> bool:
    """Whether a confounds header is fMRIPrep 1.0/1.1's (camel case, e.g. ``RotX``).

    Parameters
    ----------
    columns : sequence of str
        Header of the confounds TSV.

    Returns
    -------
    bool
        True if a column name mixes upper and lower case and has no underscore.
    """
    return bool(_camel_case(columns))


def _camel_case(columns: Sequence[str]) -> list[str]:
    return [
        str(name)
        for name in columns
        if str(name) != str(name).lower() and str(name) != str(name).upper() and "_" not in name
    ]


def find_confounds_file(image: PathType | Sequence[PathType]) -> Path:
    """Find the fMRIPrep confounds TSV that belongs to a preprocessed image.

    The confounds file must sit in the image's directory and be named
    ``<entities>_desc-confounds_timeseries.tsv`` (fMRIPrep >= 20.2) or
    ``<entities>_desc-confounds_regressors.tsv`` (older releases), where ``<entities>`` are
    some of the image's entities in the image's order.

    Parameters
    ----------
    image : str, os.PathLike or pair of them
        The image path; for a GIfTI pair the first file is used.

    Returns
    -------
    pathlib.Path
        Path of the confounds TSV.

    Raises
    ------
    ConfoundsError
        If no file or more than one file matches.

    """
    if isinstance(image, (list, tuple)):
        image = image[0]
    image_path = Path(image)
    wanted = _confounds_entities(image_path.name)
    folder = image_path.parent
    found = []
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            match = re.fullmatch(r"(.+)_(?:timeseries|regressors)\.tsv", entry.name)
            if match and entry.is_file() and _matches_entities(match.group(1), wanted):
                found.append(entry)
    if not found:
        raise ConfoundsError(
            f"Could not find the confounds file of {image_path}: expected a "
            f"'*_desc-confounds_timeseries.tsv' or '*_desc-confounds_regressors.tsv' file "
            f"sharing the image's entities in {folder}."
        )
    if len(found) > 1:
        listing = "\n\t".join(str(path) for path in found)
        raise ConfoundsError(f"Found more than one confound file for {image_path}:\n\t{listing}")
    logger.debug("Confounds file of %s: %s", image_path, found[0])
    return found[0]


def check_image_name(image: Any, full_aroma: bool) -> None:
    """Raise ValueError if the image name does not suit the strategy.

    The GIfTI test comes first: nilearn accepts a GIfTI pair whatever the ICA-AROMA
    option.
    """
    if isinstance(image, (list, tuple)):
        names = [Path(p).name for p in image]
        if len(names) != 2 or not all(
            re.search(r"_hemi-[LR](_space-.*)?_bold\.func\.gii$", n) for n in names
        ):
            raise ValueError(
                f"need fMRIPrep output with extension func.gii: a pair of "
                f"'*_hemi-L_*bold.func.gii' and '*_hemi-R_*bold.func.gii' files, got {image}."
            )
        return
    name = Path(image).name
    if full_aroma:
        if "_desc-smoothAROMAnonaggr_bold" not in name:
            raise ValueError(
                f"Input must be desc-smoothAROMAnonaggr_bold for full ICA-AROMA strategy; "
                f"got {image}."
            )
        return
    # Longest extensions first: ".dtseries.nii" must not be read as ".nii".
    patterns = {
        "dtseries.nii": r"_bold\.dtseries\.nii$",
        "func.gii": r"_hemi-[LR](_space-.*)?_bold\.func\.gii$",
        "nii.gz": r"_desc-preproc_bold\.nii\.gz$",
        "nii": r"_desc-preproc_bold\.nii$",
    }
    extension = next((ext for ext in patterns if name.endswith(f".{ext}")), None)
    if extension is None:
        raise ValueError(
            f"Unsupported input {image}: expected a '*_desc-preproc_bold.nii[.gz]', "
            f"'*_bold.dtseries.nii' or '*_hemi-[LR]_*bold.func.gii' file (or a "
            f"'*_desc-smoothAROMAnonaggr_bold' file with the full ICA-AROMA strategy)."
        )
    if not re.search(patterns[extension], name):
        raise ValueError(
            f"Invalid file type for the selected method: {image} does not match "
            f"'{patterns[extension]}'."
        )


def _confounds_entities(image_name: str) -> list[tuple[str, str]]:
    """Entities of an image name, in order, with ``desc`` set to ``confounds``."""
    entities: dict[str, str | None] = {}
    for part in image_name.split("_")[:-1]:
        key, dash, value = part.partition("-")
        entities[key] = value if dash else None
    entities["desc"] = "confounds"
    return [(key, value) for key, value in entities.items() if value is not None]


def _matches_entities(stem: str, wanted: list[tuple[str, str]]) -> bool:
    """Whether ``stem`` names some of ``wanted``'s entities, in order, including desc."""
    pairs = []
    for part in stem.split("_"):
        key, dash, value = part.partition("-")
        if not dash:
            return False
        pairs.append((key, value))
    if ("desc", "confounds") not in pairs:
        return False
    remaining = iter(wanted)
    # ``pair in remaining`` consumes the iterator, so this tests an ordered subsequence.
    return all(pair in remaining for pair in pairs)


def sidecar_path(confounds_file: Path) -> Path:
    """Return the JSON sidecar path of a confounds TSV."""
    return confounds_file.with_name(confounds_file.name[: -len(".tsv")] + ".json")


def read_confounds_tsv(path: Path) -> pd.DataFrame:
    """Read an fMRIPrep confounds TSV, raising ConfoundsError on a malformed file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfoundsError(f"Confounds file {path} does not exist.") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfoundsError(f"Cannot read confounds file {path}: {err}") from err
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ConfoundsError(
            f"Confounds file {path} is empty or starts with a blank line; expected a "
            f"tab-separated header row."
        )
    header = lines[0].split("\t")
    _check_header(path, header)
    _check_row_lengths(path, lines, len(header))
    try:
        frame = pd.read_csv(io.StringIO(text), sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfoundsError(f"Cannot parse confounds file {path} as TSV: {err}") from err
    if len(frame) == 0:
        raise ConfoundsError(f"Confounds file {path} has a header but no data rows.")
    return frame


def _check_header(path: Path, header: list[str]) -> None:
    if len(header) == 1 and re.search(r"[,; ]", header[0]):
        raise ConfoundsError(
            f"Confounds file {path} is not tab-separated: its header is a single field "
            f"{header[0][:80]!r}. fMRIPrep confounds files use tabs between columns."
        )
    try:
        float(header[0])
    except ValueError:
        pass
    else:
        raise ConfoundsError(
            f"Confounds file {path} contains no header (first field {header[0]!r} is a "
            f"number). Is this an old fMRIPrep output? Only fMRIPrep >= 1.2.0 is supported."
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ConfoundsError(f"Confounds file {path} has duplicated column(s) {duplicated}.")


def refuse_legacy_header(path: Path, header: list[str]) -> None:
    """Presets name fMRIPrep >= 1.2 columns: explain what to do with a 1.0/1.1 file."""
    camel = _camel_case(header)
    if camel:
        raise ConfoundsError(
            f"Confounds file {path} contains header in camel case ({camel[:5]}): it is an "
            f"fMRIPrep 1.0.x/1.1.x file, and the denoising presets need fMRIPrep >= 1.2.0 "
            f"column names. Select its columns with --confounds-columns instead (e.g. 'X' "
            f"'Y' 'Z' 'Rot[XYZ]' 'CSF' 'WhiteMatter'); --fd-threshold and "
            f"--std-dvars-threshold then use its FramewiseDisplacement and stdDVARS columns."
        )


def _check_row_lengths(path: Path, lines: list[str], n_columns: int) -> None:
    ragged = [
        (number, len(line.split("\t")))
        for number, line in enumerate(lines[1:], start=2)
        if line.strip() and len(line.split("\t")) != n_columns
    ]
    if ragged:
        shown = ", ".join(f"line {number} has {count}" for number, count in ragged[:5])
        raise ConfoundsError(
            f"Confounds file {path} has rows whose number of fields differs from the "
            f"header's {n_columns}: {shown}" + (" ..." if len(ragged) > 5 else "") + "."
        )


def read_sidecar(path: Path, required: bool) -> dict[str, Any]:
    """Read the confounds JSON sidecar; {} when absent and not required."""
    if not path.is_file():
        if required:
            raise ConfoundsError(
                f"Could not find the JSON sidecar {path} of the confounds file. It is "
                f"necessary for CompCor, which is only supported for fMRIPrep >= 1.4.0."
            )
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfoundsError(
            f"Malformed JSON sidecar {path}: {err.msg} (line {err.lineno}, column {err.colno})."
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfoundsError(f"Cannot read JSON sidecar {path}: {err}") from err
    if not isinstance(meta, dict):
        raise ConfoundsError(
            f"Malformed JSON sidecar {path}: expected an object mapping column names to "
            f"metadata, got {type(meta).__name__}."
        )
    return meta
