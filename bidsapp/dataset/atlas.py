"""Resolve a parcellation (TemplateFlow atlas or local dseg file) into an :class:`Atlas`.

TemplateFlow atlases are looked up directly in the TemplateFlow home folder, by file
name, without importing ``templateflow``: importing it initialises a home as a side
effect (and raises ``PermissionError`` when ``TEMPLATEFLOW_HOME`` is unset and the
user's home is read-only), and its ``get`` silently goes to the network for any
zero-byte placeholder. The network is used only when a caller passes
``allow_download=True``, through a :class:`templateflow.TemplateFlowClient` bound to
the same home.

The home is, in order: the ``templateflow_home`` argument, ``$TEMPLATEFLOW_HOME``,
then TemplateFlow's default (the user cache folder). Passing ``templateflow_home``
explicitly is the way for callers and tests to use a given home whatever the import
order of modules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"[A-Za-z0-9]+")
_NIFTI = re.compile(r"\.nii(\.gz)?$")
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
    if isinstance(spec, os.PathLike) or _NIFTI.search(text) or "/" in text or os.sep in text:
        path = Path(text).expanduser().absolute()
        entities = _filename_entities(path.name)
        name = entities.get("atlas") or _sanitize(_NIFTI.sub("", path.name).removesuffix("_dseg"))
        return AtlasSpec(name=name, desc=entities.get("desc"), path=path)
    name, _, desc = text.partition(":")
    for part, what in ((name, "name"), (desc, "description")):
        if part and not _LABEL.fullmatch(part):
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


def _filename_entities(filename: str) -> dict[str, str]:
    """Parse ``key-value`` entities of a (TemplateFlow or BIDS) file name."""
    stem = _NIFTI.sub("", filename)
    stem = re.sub(r"\.tsv$", "", stem)
    entities = {}
    for part in stem.split("_"):
        key, dash, value = part.partition("-")
        if dash and key and value:
            entities[key] = value
    return entities


def atlas_label(name: str, desc: str | None) -> str:
    """Return the alphanumeric ``atlas-`` entity value for an atlas (name + desc)."""
    return _sanitize(name + (desc or ""))


# ------------------------------------------------------- look-up tables


def read_lut(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a BIDS ``dseg.tsv`` look-up table.

    Parameters
    ----------
    path : str or os.PathLike
        Tab-separated file with at least ``index`` and ``name`` columns.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``index`` (int64), ``name`` as stripped strings, other columns kept.

    Raises
    ------
    AtlasError
        If the file is missing, empty or unreadable, lacks a column, or has
        missing, non-integer, negative or duplicate indices, or empty or repeated names.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise AtlasError(f"Look-up table {path} is missing or empty; it needs index and name.")
    try:
        lut = pd.read_csv(path, sep="\t", dtype={"name": str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise AtlasError(f"Look-up table {path} is not a readable TSV file: {exc}") from exc
    missing = {"index", "name"} - set(lut.columns)
    if missing:
        raise AtlasError(
            f"Look-up table {path} lacks column(s) {', '.join(sorted(missing))}; a dseg.tsv "
            f"needs tab-separated 'index' and 'name' columns (found: {', '.join(lut.columns)})."
        )
    index = pd.to_numeric(lut["index"].replace("n/a", np.nan), errors="coerce")
    bad = index.isna() | (index % 1 != 0) | (index < 0)
    if bad.any():
        rows = ", ".join(str(v) for v in lut.loc[bad, "index"].head(5))
        raise AtlasError(
            f"Look-up table {path} has index values that are not non-negative integers "
            f"({rows}); fix the 'index' column."
        )
    lut = lut.assign(index=index.astype(np.int64), name=lut["name"].astype(str).str.strip())
    duplicated = lut["index"][lut["index"].duplicated()].unique()
    if len(duplicated):
        raise AtlasError(
            f"Look-up table {path} repeats index value(s) {', '.join(map(str, duplicated[:5]))}; "
            "each region needs one row."
        )
    empty = lut.loc[(lut["name"] == "") | (lut["name"] == "n/a"), "index"]
    if len(empty):
        raise AtlasError(
            f"Look-up table {path} has no name for index value(s) "
            f"{', '.join(map(str, empty.head(5)))}; fill the 'name' column."
        )
    # Names become the timeseries columns: two regions with one name would give two
    # columns nobody can tell apart (and a relmat indexed ambiguously).
    repeated = lut["name"][lut["name"].duplicated()].unique()
    if len(repeated):
        rows = lut[lut["name"].isin(repeated[:5])]
        shown = "; ".join(
            f"{name!r} at index {', '.join(map(str, group['index']))}"
            for name, group in rows.groupby("name", sort=False)
        )
        raise AtlasError(
            f"Look-up table {path} repeats region name(s): {shown}; each region needs its "
            "own name (add the hemisphere, say)."
        )
    return lut.sort_values("index", kind="stable").reset_index(drop=True)


def region_ids(atlas: Atlas) -> list[int]:
    """Return the atlas's region indices from its look-up table, background (0) excluded."""
    return _lut_region_ids(atlas.lut)


def region_names(atlas: Atlas) -> list[str]:
    """Return the atlas's region names in index order, background (0) excluded."""
    regions = atlas.lut[atlas.lut["index"] != 0]
    return [str(name) for name in regions["name"]]


# ------------------------------------------------------------ labels image


def check_labels_image(path: str | os.PathLike) -> np.ndarray:
    """Check that a file is a 3D image of non-negative integer labels.

    Parameters
    ----------
    path : str or os.PathLike
        NIfTI labels image (a trailing singleton 4th dimension is accepted).

    Returns
    -------
    numpy.ndarray
        Sorted unique labels present in the image, 0 included if present.

    Raises
    ------
    AtlasError
        If the file is empty or unreadable (a header disagreeing with the file's size, a
        truncated or corrupt gzip stream), has unusable voxel sizes or affine, is not 3D,
        or holds non-finite, negative or non-integer values.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise AtlasError(f"Labels image {path} is missing or empty.")
    from bidsapp import image as _image
    from bidsapp import stream

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise AtlasError(f"Labels image {path} cannot be read as NIfTI: {exc}") from exc
    try:
        # The checked reader of every image: header claims against the file, gzip read to
        # its end (CRC32, length), then the geometry resampling onto the BOLD relies on.
        data = stream.read_data(img)
        _image.check_header(img)
    except (stream.StreamError, _image.HeaderError) as exc:
        raise AtlasError(f"Labels image {exc}") from exc
    except Exception as exc:  # nibabel's fallback reader (other formats)
        raise AtlasError(f"Labels image {path} cannot be read as NIfTI: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise AtlasError(
            f"Labels image {path} has shape {data.shape}; a dseg must be 3D (one integer "
            "label per voxel). 4D probabilistic atlases (probseg) are not supported."
        )
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)):
            raise AtlasError(
                f"Labels image {path} has NaN or infinite values; labels are integers."
            )
        if not np.array_equal(data, np.round(data)):
            raise AtlasError(
                f"Labels image {path} has non-integer values (dtype {data.dtype}); is it a "
                "probabilistic map rather than a dseg? Use an integer labels image."
            )
    labels = np.unique(data)
    if labels.size and labels[0] < 0:
        raise AtlasError(f"Labels image {path} has negative labels ({labels[0]}).")
    return labels.astype(np.int64)


def _check_labels_in_lut(dseg: Path, labels: np.ndarray, lut: pd.DataFrame, lut_path: Path):
    """Every non-zero label of the image must have a row in the look-up table."""
    unknown = sorted(set(labels.tolist()) - set(lut["index"].tolist()) - {0})
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise AtlasError(
            f"Labels image {dseg} has {len(unknown)} label(s) missing from its look-up table "
            f"{lut_path}: {shown}. Use the matching dseg.tsv (or pass lut_path)."
        )
    absent = len(set(_lut_region_ids(lut)) - set(labels.tolist()))
    if absent:
        logger.info("%d region(s) of %s are not in %s", absent, lut_path, dseg)


def _lut_region_ids(lut: pd.DataFrame) -> list[int]:
    """Return the non-background indices of a look-up table."""
    return [int(i) for i in lut["index"] if i != 0]


# ----------------------------------------------------------- TemplateFlow


def resolve_templateflow_home(templateflow_home: str | os.PathLike | None = None) -> Path:
    """Return the TemplateFlow home to use, without importing templateflow.

    Parameters
    ----------
    templateflow_home : str or os.PathLike or None, optional
        Explicit home; else ``$TEMPLATEFLOW_HOME``; else TemplateFlow's default
        (``platformdirs.user_cache_dir("templateflow")``, ``~/.cache/templateflow``
        on Linux).

    Returns
    -------
    pathlib.Path
        Absolute path (it may not exist).
    """
    if templateflow_home is not None:
        return Path(templateflow_home).expanduser().absolute()
    env = os.environ.get("TEMPLATEFLOW_HOME")
    if env:
        return Path(env).expanduser().absolute()
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # platformdirs comes with templateflow; be safe without it
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
        return (Path(cache) / "templateflow").absolute()
    return Path(user_cache_dir("templateflow")).absolute()


@contextlib.contextmanager
def _first_import_home(home: Path) -> Iterator[None]:
    """Point templateflow's import-time home at ``home`` if it is not imported yet.

    Importing templateflow builds a global cache from ``$TEMPLATEFLOW_HOME`` and
    initialises that folder; with the variable unset it would write into the user's
    cache folder (and fail where that is read-only). The variable is restored after.
    """
    if "templateflow" in sys.modules or "TEMPLATEFLOW_HOME" in os.environ:
        yield
        return
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    try:
        yield
    finally:
        os.environ.pop("TEMPLATEFLOW_HOME", None)


def templateflow_client(templateflow_home: str | os.PathLike | None = None):
    """Return a :class:`templateflow.TemplateFlowClient` bound to one home.

    Parameters
    ----------
    templateflow_home : str or os.PathLike or None, optional
        See :func:`resolve_templateflow_home`.

    Returns
    -------
    templateflow.TemplateFlowClient
        Client whose cache root is that home (independent of import order).

    Raises
    ------
    AtlasError
        If templateflow cannot be imported (e.g. ``PermissionError`` on an
        unwritable default home).
    """
    home = resolve_templateflow_home(templateflow_home)
    try:
        with _first_import_home(home):
            from templateflow import TemplateFlowClient
    except (OSError, ImportError) as exc:
        raise AtlasError(
            f"Cannot import templateflow ({exc}). Set TEMPLATEFLOW_HOME to a writable "
            f"folder (currently {home}) before starting, e.g. export "
            "TEMPLATEFLOW_HOME=$PWD/templateflow."
        ) from exc
    return TemplateFlowClient(root=home)


def _prefetch_hint(home: Path, space: str, query: dict) -> str:
    """Return the shell line that downloads a TemplateFlow file into ``home``."""
    arguments = ", ".join(f"{key}={value!r}" for key, value in query.items())
    return (
        f'TEMPLATEFLOW_HOME={home} python -c "from templateflow import api; '
        f'api.get({space!r}, {arguments})"'
    )


def _tf_candidates(folder: Path, space: str, name: str, suffix: str, ext: str) -> list[dict]:
    """List files of one atlas in a template folder with their entities.

    Only files whose entities are exactly ``tpl``, optional ``res``, ``atlas`` and
    optional ``desc`` are kept (hemisphere, cohort or segmentation variants are not
    volumetric whole-brain labels).
    """
    found = []
    for path in sorted(folder.glob(f"tpl-{space}_*atlas-{name}_*{suffix}{ext}")):
        entities = _filename_entities(path.name)
        if entities.get("tpl") != space or entities.get("atlas") != name:
            continue
        if set(entities) - {"tpl", "res", "atlas", "desc"}:
            continue
        if not path.name.endswith(f"_{suffix}{ext}"):
            continue
        found.append({"path": path, "res": entities.get("res"), "desc": entities.get("desc")})
    return found


def _template_zooms(home: Path, space: str) -> dict[int, np.ndarray]:
    """Voxel sizes (mm) per resolution index from ``template_description.json``."""
    path = home / f"tpl-{space}" / "template_description.json"
    try:
        description = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logger.debug("no readable %s; resolutions judged by their images", path)
        return {}
    zooms = {}
    for key, grid in (description.get("res") or {}).items():
        with contextlib.suppress(KeyError, TypeError, ValueError):
            zooms[int(key)] = np.asarray(grid["zooms"], dtype=float)
    return zooms


def _resolution_order(
    candidates: list[dict], zooms: dict[int, np.ndarray], voxel_size_mm
) -> list[dict]:
    """Sort atlas files: voxel size closest to the BOLD's first, finer on ties.

    Without a voxel size, the finest resolution comes first. Unknown voxel sizes
    (resolution missing from template_description.json) come last.
    """
    target = (
        None
        if voxel_size_mm is None
        else np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,))
    )

    def rank(candidate: dict) -> tuple[float, float]:
        res = candidate["res"]
        size = zooms.get(int(res)) if res is not None and res.isdigit() else None
        if size is None:
            return (np.inf, np.inf) if res is not None else (0.0, 0.0)
        finer = float(np.mean(size))
        if target is None:
            return (finer, 0.0)
        return (float(np.max(np.abs(size - target))), finer)

    return sorted(candidates, key=rank)


def _is_placeholder(path: Path) -> bool:
    """Whether a TemplateFlow file has not been downloaded (missing or zero bytes)."""
    return not path.is_file() or path.stat().st_size == 0


def _templateflow_dseg(
    spec: AtlasSpec, space: str, home: Path, voxel_size_mm, allow_download: bool
) -> tuple[Path, int | None, str | None]:
    """Find (and optionally download) the dseg image of a TemplateFlow atlas."""
    folder = home / f"tpl-{space}"
    _check_home(home, folder, spec, space)
    all_variants = _tf_candidates(folder, space, spec.name, "dseg", ".nii.gz")
    if not all_variants:
        raise AtlasError(
            f"Atlas {_spec_text(spec)} has no dseg image for space {space} in TemplateFlow "
            f"(TEMPLATEFLOW_HOME={home}). Atlases with dseg images in {space}: "
            f"{', '.join(list_atlases(space, home)) or 'none'}."
        )
    desc = spec.desc
    descs = sorted({c["desc"] for c in all_variants if c["desc"]})
    if desc is None and descs and not any(c["desc"] is None for c in all_variants):
        if len(descs) > 1:
            raise AtlasError(
                f"Atlas {spec.name} has several variants in {space}: "
                f"{', '.join(f'{spec.name}:{d}' for d in descs)}; pick one."
            )
        desc = descs[0]
    variants = [c for c in all_variants if c["desc"] == desc]
    if not variants:
        raise AtlasError(
            f"Atlas {_spec_text(spec)} is not in TemplateFlow for space {space} "
            f"(TEMPLATEFLOW_HOME={home}); variants there: "
            f"{', '.join(f'{spec.name}:{d}' for d in descs) or spec.name}."
        )
    ordered = _resolution_order(variants, _template_zooms(home, space), voxel_size_mm)
    chosen = _first_available(ordered, voxel_size_mm)
    if chosen is None:
        chosen = ordered[0]
        query = _tf_query(spec.name, desc, chosen["res"], "dseg", ".nii.gz")
        _download(chosen["path"], home, space, query, spec, allow_download)
    res = chosen["res"]
    return chosen["path"], int(res) if res is not None and res.isdigit() else None, desc


def _first_available(ordered: list[dict], voxel_size_mm) -> dict | None:
    """Return the best-ranked file present locally, warning if it is not the best."""
    for position, candidate in enumerate(ordered):
        if not _is_placeholder(candidate["path"]):
            if position:
                logger.warning(
                    "Using %s: the closer resolution %s (voxel size %s mm) is not downloaded.",
                    candidate["path"].name,
                    ordered[0]["path"].name,
                    voxel_size_mm,
                )
            return candidate
    return None


def _tf_query(name: str, desc: str | None, res: str | None, suffix: str, ext: str) -> dict:
    """TemplateFlow ``get`` keyword arguments for one file."""
    query = {"atlas": name, "desc": desc}
    if res is not None:
        query["resolution"] = int(res) if res.isdigit() else res
    query.update(suffix=suffix, extension=ext)
    return query


def _download(
    path: Path, home: Path, space: str, query: dict, spec: AtlasSpec, allow_download: bool
) -> None:
    """Fetch a placeholder file with TemplateFlow, or explain how to."""
    hint = _prefetch_hint(home, space, query)
    if not allow_download:
        raise AtlasError(
            f"Atlas {_spec_text(spec)} (space {space}) is not available offline: {path} is "
            f"an empty TemplateFlow placeholder (TEMPLATEFLOW_HOME={home}). Fetch it once "
            f"on a machine with network access:\n  {hint}\nthen copy that TEMPLATEFLOW_HOME "
            "here; or allow downloads; or pass a local *_dseg.nii.gz file."
        )
    logger.info("Downloading %s into TEMPLATEFLOW_HOME=%s", path.name, home)
    client = templateflow_client(home)
    try:
        client.get(space, **query)
    except (OSError, RuntimeError) as exc:  # requests' errors are OSErrors
        raise AtlasError(
            f"Downloading atlas {_spec_text(spec)} into TEMPLATEFLOW_HOME={home} failed "
            f"({type(exc).__name__}: {exc}). Without network access, pre-fetch it "
            f"elsewhere:\n  {hint}"
        ) from exc
    if _is_placeholder(path):
        raise AtlasError(f"TemplateFlow did not fetch {path} (TEMPLATEFLOW_HOME={home}):\n  {hint}")


def _check_home(home: Path, folder: Path, spec: AtlasSpec, space: str) -> None:
    """Explain a missing home or template folder."""
    if not home.is_dir() or not any(home.iterdir()):
        raise AtlasError(
            f"TemplateFlow home {home} does not exist or is empty, so atlas "
            f"{_spec_text(spec)} cannot be found. Set TEMPLATEFLOW_HOME to a prepared "
            f"TemplateFlow folder, or fetch the atlas:\n  "
            + _prefetch_hint(home, space, _tf_query(spec.name, spec.desc, None, "dseg", ".nii.gz"))
        )
    if not folder.is_dir():
        templates = sorted(p.name[4:] for p in home.glob("tpl-*") if p.is_dir())
        raise AtlasError(
            f"Space {space!r} is not a TemplateFlow template in TEMPLATEFLOW_HOME={home} "
            f"(atlas {_spec_text(spec)}); templates there: {', '.join(templates) or 'none'}."
        )


def _templateflow_lut(
    spec: AtlasSpec,
    desc: str | None,
    space: str,
    resolution: int | None,
    home: Path,
    allow_download: bool,
) -> Path:
    """Find the look-up table of a TemplateFlow atlas.

    TemplateFlow stores most as ``tpl-X_atlas-Y[_desc-Z]_dseg.tsv`` (no ``res``), a
    few with ``res``, and some shared by every ``desc`` variant (no ``desc``).
    """
    folder = home / f"tpl-{space}"
    tables = _tf_candidates(folder, space, spec.name, "dseg", ".tsv")
    ranked = [(_lut_rank(t, desc, resolution), t) for t in tables]
    usable = [t for rank, t in sorted(ranked, key=lambda pair: pair[0] or ()) if rank]
    if not usable:
        raise AtlasError(
            f"Atlas {_spec_text(spec)} has no dseg.tsv look-up table in {folder} "
            f"(TEMPLATEFLOW_HOME={home}); pass one with lut_path."
        )
    table = usable[0]
    if _is_placeholder(table["path"]):
        query = _tf_query(spec.name, table["desc"], table["res"], "dseg", ".tsv")
        _download(table["path"], home, space, query, spec, allow_download)
    return table["path"]


def _lut_rank(table: dict, desc: str | None, resolution: int | None) -> tuple | None:
    """Rank a look-up table for an atlas variant (lower is better; None: unusable).

    Prefer the same ``desc`` over a desc-less table shared by all variants, and a
    table without ``res`` over one for the same resolution; other descs or
    resolutions do not apply.
    """
    if table["desc"] not in (desc, None):
        return None
    res = table["res"]
    if res is not None and (resolution is None or not res.isdigit() or int(res) != resolution):
        return None
    return (table["desc"] != desc, res is not None)


def list_atlases(space: str, templateflow_home: str | os.PathLike | None = None) -> list[str]:
    """List ``NAME[:DESC]`` of the dseg atlases TemplateFlow has for a space.

    Parameters
    ----------
    space : str
        Template identifier.
    templateflow_home : str or os.PathLike or None, optional
        See :func:`resolve_templateflow_home`.

    Returns
    -------
    list of str
        Sorted atlas specifications (downloaded or not).
    """
    folder = resolve_templateflow_home(templateflow_home) / f"tpl-{space}"
    found = set()
    for path in folder.glob(f"tpl-{space}_*atlas-*_dseg.nii.gz"):
        entities = _filename_entities(path.name)
        if set(entities) - {"tpl", "res", "atlas", "desc"}:
            continue
        desc = entities.get("desc")
        found.add(f"{entities['atlas']}:{desc}" if desc else entities["atlas"])
    return sorted(found)


def _spec_text(spec: AtlasSpec) -> str:
    """Render a spec as the user would write it."""
    if spec.path is not None:
        return str(spec.path)
    return spec.name + (f":{spec.desc}" if spec.desc else "")


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
    entities = _filename_entities(path.name)
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
        (see :func:`parse_atlas_spec`).
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
        See :func:`resolve_templateflow_home`.
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
    if not _LABEL.fullmatch(str(space)):
        raise AtlasError(f"Space {space!r} is not a valid template name (letters and digits).")
    if parsed.path is not None:
        atlas = _local_atlas(parsed, space, lut_path, atlas_space)
    else:
        atlas = _templateflow_atlas(
            parsed, space, voxel_size_mm, lut_path, templateflow_home, allow_download
        )
    labels = check_labels_image(atlas.dseg)
    _check_labels_in_lut(atlas.dseg, labels, atlas.lut, atlas.lut_path)
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
    dseg, resolution, desc = _templateflow_dseg(spec, space, home, voxel_size_mm, allow_download)
    if lut_path is None:
        lut_path = _templateflow_lut(spec, desc, space, resolution, home, allow_download)
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
    entities = _filename_entities(path.name)
    file_space = local_atlas_space(path, atlas_space)
    if file_space != space:
        raise AtlasError(
            f"Local atlas {path} is in space {file_space} but the BOLD data are in {space}; "
            f"it is not resampled across spaces: use an atlas in {space} (or process the "
            f"{file_space} outputs)."
        )
    if lut_path is None:
        lut_path = path.with_name(_NIFTI.sub("", path.name) + ".tsv")
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
