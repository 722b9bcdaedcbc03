"""BIDS entity tables, labels and file names: the one place a BIDS name is built or split.

Part of the dataset layer. It holds the entity table every module names files with
(:data:`ENTITY_ORDER`, with the aliases pybids and the schema use) and the tables derived
from it for inputs (:data:`BOLD_ENTITIES`), the checks of labels and index values,
:func:`bids_name` (entities -> file name), :func:`parse_name` (file name -> entities,
strict, for inputs), :func:`name_entities` (the names bidsapp wrote, as written),
:func:`loose_entities` (atlas file names) and :func:`bids_uri`. Plain
Python: no pybids, numpy or pandas.

The names are built and split here rather than by pybids's ``build_path`` and
``parse_file_entities`` with a config of our patterns: with such a config (``stat-`` and the
output patterns) both give the same names for every output of the demo, but they are 15-25
times slower per name (~130 us to parse and ~340 us to build, against ~7 and ~13 us here; a
dataset of 20,000 files is parsed at every query), ``build_path`` checks no label and returns
None instead of saying which entity is wrong, and ``parse_file_entities`` does not report the
unknown entities an input must be refused for.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Entities bidsapp may write, as (name, filename key), in the order of the BIDS schema
#: (``rules.entities`` of BIDS 1.11; names are the schema's, except ``res``, ``den`` and
#: ``desc``, which keep pybids's short names). ``stat`` is not a BIDS entity; it sits where
#: XCP-D puts it, after ``atlas``/``res``/``den`` and before ``desc``. ``cohort`` (a
#: TemplateFlow entity fMRIPrep writes after ``space-``) is in the schema's list.
ENTITY_ORDER: tuple[tuple[str, str], ...] = (
    ("subject", "sub"),
    ("template", "tpl"),
    ("session", "ses"),
    ("cohort", "cohort"),
    ("sample", "sample"),
    ("task", "task"),
    ("tracksys", "tracksys"),
    ("acquisition", "acq"),
    ("nucleus", "nuc"),
    ("volume", "voi"),
    ("ceagent", "ce"),
    ("tracer", "trc"),
    ("stain", "stain"),
    ("reconstruction", "rec"),
    ("direction", "dir"),
    ("run", "run"),
    ("modality", "mod"),
    ("echo", "echo"),
    ("flip", "flip"),
    ("inversion", "inv"),
    ("mtransfer", "mt"),
    ("part", "part"),
    ("processing", "proc"),
    ("hemisphere", "hemi"),
    ("space", "space"),
    ("split", "split"),
    ("recording", "recording"),
    ("chunk", "chunk"),
    ("atlas", "atlas"),
    ("segmentation", "seg"),
    ("scale", "scale"),
    ("res", "res"),
    ("den", "den"),
    ("label", "label"),
    ("stat", "stat"),
    ("desc", "desc"),
)
#: Name -> file-name key of each entity of :data:`ENTITY_ORDER` (``subject`` -> ``sub``).
ENTITY_KEYS: dict[str, str] = dict(ENTITY_ORDER)
#: File-name key -> name of each entity of :data:`ENTITY_ORDER` (``sub`` -> ``subject``).
ENTITY_NAMES: dict[str, str] = {key: name for name, key in ENTITY_ORDER}
INDEX_ENTITIES = frozenset({"run", "echo", "flip", "inversion", "split", "chunk"})
#: Other spellings of an entity (pybids config names, schema long names, file-name keys)
#: -> the name used in :data:`ENTITY_ORDER`; entity dicts from pybids use the first kind.
ENTITY_ALIASES: dict[str, str] = {
    **ENTITY_NAMES,
    **{name: name for name, _ in ENTITY_ORDER},
    "staining": "stain",
    "proc": "processing",
    "inv": "inversion",
    "mt": "mtransfer",
    "hemi": "hemisphere",
    "resolution": "res",
    "density": "den",
    "description": "desc",
}

#: Entities of the input BOLD carried into output names (every entity but ``space``, which
#: is written separately, and those bidsapp sets itself), in BIDS order. Keeping all of them
#: is what keeps two inputs (two resolutions, ``part-mag``/``part-phase``, two cohorts)
#: from writing one output name.
RUN_ENTITIES: tuple[str, ...] = tuple(
    name for name, _ in ENTITY_ORDER if name not in {"template", "space", "atlas", "stat", "desc"}
)
#: Entities identifying a run's outputs: :data:`RUN_ENTITIES`, then ``space`` (the order of
#: the status table's key and of the report's run records).
RUN_KEY_ENTITIES: tuple[str, ...] = (*RUN_ENTITIES, "space")
#: Keys of a pybids entity dict that are deliberately not carried into output names.
DROPPED_ENTITIES = frozenset({"desc", "description", "suffix", "extension", "datatype"})

#: Entities that can distinguish two preprocessed BOLD inputs, in the order runs are sorted
#: and listed (pybids long names). A subset of :data:`RUN_ENTITIES` plus ``space``, not the
#: whole table, on purpose: an input whose name carries any other entity (``proc-``,
#: ``hemi-``...) is refused as its run's problem rather than matched to a mask or confounds
#: table that lacks it. These are the only keys ``BoldRun.entities`` can hold.
BOLD_ENTITIES: tuple[str, ...] = (
    "subject",
    "session",
    "task",
    "acquisition",
    "ceagent",
    "reconstruction",
    "direction",
    "run",
    "echo",
    "part",
    "chunk",
    "space",
    "cohort",
    "res",
    "den",
)
#: Entities naming the output grid of a run (the others name the acquisition).
GRID_ENTITIES: tuple[str, ...] = ("space", "cohort", "res", "den")
#: Entities of :data:`RUN_ENTITIES` naming one BOLD acquisition whatever its grid (how the
#: group level matches an outcome to a run: ICA-AROMA outputs are in another space and
#: resolution than the run's query).
RUN_ACQUISITION_ENTITIES: tuple[str, ...] = tuple(
    name for name in RUN_ENTITIES if name not in GRID_ENTITIES
)
#: Entities naming a run whatever its grid (``BoldRun.name``).
RUN_NAME_ENTITIES: tuple[str, ...] = tuple(k for k in BOLD_ENTITIES if k not in GRID_ENTITIES)
#: File-name key of each BOLD entity and of ``desc`` (from :data:`ENTITY_ORDER`).
BOLD_KEYS: dict[str, str] = {name: ENTITY_KEYS[name] for name in (*BOLD_ENTITIES, "desc")}
#: File-name key -> name of each BOLD entity and of ``desc`` (inverse of :data:`BOLD_KEYS`).
BOLD_NAMES: dict[str, str] = {key: name for name, key in BOLD_KEYS.items()}

#: Where the atlas dataset lives, relative to the output directory (BIDS ``sourcedata/`` is


LABEL_RE = re.compile(r"[A-Za-z0-9]+")
INDEX_RE = re.compile(r"[0-9]+")
#: NIfTI extensions at the end of a file name.
NIFTI_RE = re.compile(r"\.nii(\.gz)?$")
_EXTENSION_RE = re.compile(r"(\.[A-Za-z0-9]+)+")


# --------------------------------------------------------------------------------------------
# Labels and names
# --------------------------------------------------------------------------------------------


def to_label(value: Any) -> str:
    """Turn an arbitrary string into a valid BIDS label (letters and digits only).

    Runs of other characters are removed and the letter that follows them is upper-cased, so
    word boundaries stay readable.

    Parameters
    ----------
    value : str
        Any text, e.g. an atlas description or an extraction strategy.

    Returns
    -------
    str
        An alphanumeric label, e.g. ``"400Parcels 7Networks"`` -> ``"400Parcels7Networks"``,
        ``"standard_deviation"`` -> ``"standardDeviation"``.

    Raises
    ------
    ValueError
        If ``value`` contains no ASCII letter or digit.

    """
    parts = [part for part in re.split(r"[^A-Za-z0-9]+", str(value)) if part]
    if not parts:
        raise ValueError(f"Cannot make a BIDS label from {value!r}: it has no letter or digit.")
    return parts[0] + "".join(part[0].upper() + part[1:] for part in parts[1:])


def check_label(value: Any, *, entity: str = "label") -> str:
    """Return ``value`` as a string if it is a valid BIDS label, else raise.

    Parameters
    ----------
    value : str or int
        Candidate entity value.
    entity : str
        Entity name, used in the error message.

    Returns
    -------
    str
        The value, unchanged, as a string.

    Raises
    ------
    ValueError
        If the value is empty or contains anything but ASCII letters and digits.

    """
    text = str(value)
    if isinstance(value, bool) or not LABEL_RE.fullmatch(text):
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f"; to_label() would give {to_label(text)!r}"
        raise ValueError(
            f"Invalid value {text!r} for BIDS entity {entity!r}: labels may contain only "
            f"letters and digits (A-Z, a-z, 0-9){hint}."
        )
    return text


def _check_index(value: Any, *, entity: str) -> str:
    """Return an index entity value (``run``, ``echo``) as a string of digits, else raise."""
    text = str(value)
    if isinstance(value, bool) or not INDEX_RE.fullmatch(text):
        raise ValueError(
            f"Invalid value {text!r} for BIDS entity {entity!r}: it must be a non-negative "
            "integer (digits only)."
        )
    return text


def bids_name(entities: Mapping[str, Any], *, suffix: str, extension: str) -> str:
    """Build a BIDS file name from entities, in BIDS entity order.

    Parameters
    ----------
    entities : mapping
        pybids long names (``subject``, ``session``, ``task``, ``acquisition``, ``ceagent``,
        ``reconstruction``, ``direction``, ``run``, ``echo``, ``part``, ``space``, ``res``,
        ``den``, ``desc``) plus ``template``, ``atlas`` and ``stat``. None values are skipped;
        the caller decides which entities to pass (see
        :func:`~bidsapp.dataset.run_outputs.output_paths`).
    suffix : str
        Alphanumeric suffix, e.g. ``"timeseries"``.
    extension : str
        Extension with its leading dot, e.g. ``".tsv"`` or ``".nii.gz"``.

    Returns
    -------
    str
        A file name such as ``"sub-01_task-rest_space-MNI152NLin2009cAsym_atlas-X_bold.tsv"``.

    Raises
    ------
    ValueError
        For an unknown entity, an invalid value, suffix or extension.

    """
    entities = canonical_entities(entities)
    unknown = sorted(set(entities) - set(ENTITY_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown BIDS entities {unknown}; bids_name accepts {[n for n, _ in ENTITY_ORDER]}."
        )
    parts = []
    for name, key in ENTITY_ORDER:
        value = entities.get(name)
        if value is None:
            continue
        check = _check_index if name in INDEX_ENTITIES else check_label
        parts.append(f"{key}-{check(value, entity=name)}")
    if not parts:
        raise ValueError("A BIDS file name needs at least one entity.")
    check_label(suffix, entity="suffix")
    if not _EXTENSION_RE.fullmatch(extension):
        raise ValueError(f"Invalid extension {extension!r}: expected e.g. '.tsv' or '.nii.gz'.")
    return "_".join([*parts, suffix]) + extension


def bids_uri(path: str | os.PathLike[str], *, root: str | os.PathLike[str], dataset: str) -> str:
    """Return the BIDS URI (``bids:<dataset>:<relative path>``) of a file inside a dataset.

    Parameters
    ----------
    path : path-like
        File inside ``root``.
    root : path-like
        Root of the dataset that ``dataset`` names in ``DatasetLinks``.
    dataset : str
        Key of ``DatasetLinks`` (``"preprocessed"``, ``"atlases"``), or ``""`` for the
        current dataset.

    Returns
    -------
    str
        E.g. ``"bids:preprocessed:sub-01/func/sub-01_task-rest_desc-preproc_bold.nii.gz"``.

    Raises
    ------
    ValueError
        If ``path`` is not inside ``root``.

    """
    full, base = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        relative = full.relative_to(base)
    except ValueError:
        # One of the two may have been reached through a symbolic link (pybids, containers).
        try:
            relative = full.resolve().relative_to(base.resolve())
        except ValueError:
            raise ValueError(f"{full} is not inside the dataset {base}.") from None
    return f"bids:{dataset}:{relative.as_posix()}"


def canonical_entities(entities: Mapping[str, Any]) -> dict[str, Any]:
    """Rename entity keys to the names of :data:`ENTITY_ORDER` (pybids or short spellings).

    Parameters
    ----------
    entities : mapping
        Entity dict, e.g. from pybids (``resolution``, ``proc``) or with file-name keys.

    Returns
    -------
    dict
        The same items under canonical names (``res``, ``processing``); None values are
        dropped; unknown keys are kept as given (callers decide whether they are an error).

    Raises
    ------
    ValueError
        If two spellings of one entity carry different values.

    """
    clean: dict[str, Any] = {}
    for key, value in entities.items():
        if is_missing(value):
            continue
        name = ENTITY_ALIASES.get(key, key)
        if name in clean and str(clean[name]) != str(value):
            raise ValueError(
                f"Entity {name!r} given twice with different values: {clean[name]!r} and "
                f"{value!r} (in {dict(entities)})."
            )
        clean[name] = value
    return clean


def is_missing(value: Any) -> bool:
    """Tell whether a value is None or float NaN (how a missing cell reads back)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class ParsedName:
    """A file name split into entities (pybids long names where known), suffix, extension."""

    path: Path
    pairs: tuple[tuple[str, str], ...]  # (short key, value) as written, in order
    suffix: str
    extension: str
    error: str | None = None

    @property
    def entities(self) -> dict[str, str]:
        """Entities of :data:`BOLD_KEYS` by long name (other keys are left out)."""
        return {BOLD_NAMES[k]: v for k, v in self.pairs if k in BOLD_NAMES}

    @property
    def unknown(self) -> list[str]:
        """``key-value`` pairs whose key bidsapp cannot carry into output names."""
        return [f"{k}-{v}" for k, v in self.pairs if k not in BOLD_NAMES]

    def key(self, drop: Iterable[str] = ()) -> tuple:
        """Hashable identity: known entities but ``desc`` and those in ``drop``."""
        dropped = {"desc", *drop}
        return tuple(
            sorted((k, index_value(k, v)) for k, v in self.entities.items() if k not in dropped)
        )


def index_value(key: str, value: str) -> str:
    """Compare index entities numerically (``run-01`` is ``run-1``)."""
    return str(int(value)) if key in INDEX_ENTITIES and value.isdigit() else value


def parse_name(path: str | Path) -> ParsedName:
    """Split a BIDS file name into its entity pairs, suffix and extension (strictly).

    Parameters
    ----------
    path : str or pathlib.Path
        A file path; only its name is parsed.

    Returns
    -------
    ParsedName
        Its ``key-value`` pairs as written, suffix and extension (from the first dot on);
        ``error`` names a part before the suffix that is not a ``key-value`` pair of
        letters and digits (such parts are left out of ``pairs``).
    """
    path = Path(path)
    parts, suffix, extension = _split_name(path.name)
    pairs = []
    error = None
    for part in parts:
        key, dash, value = part.partition("-")
        if not dash or not LABEL_RE.fullmatch(key) or not LABEL_RE.fullmatch(value):
            error = f"{path}: {part!r} is not a BIDS key-value entity"
            continue
        pairs.append((key, value))
    return ParsedName(path, tuple(pairs), suffix, extension, error)


def _split_name(name: str) -> tuple[list[str], str, str]:
    """Split a file name into its parts before the suffix, its suffix and its extension."""
    stem, dot, rest = name.partition(".")
    parts = stem.split("_")
    return parts[:-1], parts[-1], dot + rest


def name_entities(name: str) -> dict[str, str]:
    """Read the entities of a file name bidsapp wrote, by name, values as written.

    The reading of output names (the report's and the group level's): split as
    :func:`parse_name` splits, but without its checks, since bidsapp wrote these names
    (:func:`bids_name` checked them) and a stray file is read as the others are: every part
    before the suffix with a dash counts, with its value as written (``desc-a-b`` gives
    ``{"desc": "a-b"}``, ``sub-`` gives ``{"subject": ""}``), and a key given twice keeps
    its last value.

    Parameters
    ----------
    name : str
        A file name (no folder), e.g.
        ``sub-01_task-rest_atlas-X_stat-mean_desc-simple_timeseries.tsv``.

    Returns
    -------
    dict of str to str
        Entities under the names of :data:`ENTITY_ORDER` (``subject``, ``task``, ``atlas``,
        ``stat``...); unknown keys are kept as written. The suffix is not among them.
    """
    entities = {}
    for part in _split_name(name)[0]:
        key, dash, value = part.partition("-")
        if dash:
            entities[ENTITY_NAMES.get(key, key)] = value
    return entities


def loose_entities(filename: str) -> dict[str, str]:
    """Read the ``key-value`` entities of an atlas file name, tolerantly.

    The reading of atlas names (TemplateFlow's, and local files the user named): unlike
    :func:`parse_name`, which refuses an input whose name is not strictly BIDS, it keeps
    every part with a dash, the last one included, with values as written (``a-b-c`` gives
    ``{"a": "b-c"}``), after removing a ``.nii``, ``.nii.gz`` or ``.tsv`` extension; so a
    local atlas named loosely still gets the label and space its name shows.

    Parameters
    ----------
    filename : str
        A file name (no folder).

    Returns
    -------
    dict of str to str
        File-name keys (``tpl``, ``atlas``, ``desc``, ``res``...) to values.
    """
    stem = NIFTI_RE.sub("", filename)
    stem = re.sub(r"\.tsv$", "", stem)
    entities = {}
    for part in stem.split("_"):
        key, dash, value = part.partition("-")
        if dash and key and value:
            entities[key] = value
    return entities
