"""TemplateFlow atlases, found by file name in the TemplateFlow home (no network by default).

Part of the dataset layer. Atlases are looked up directly in the TemplateFlow home folder,
by file name, without importing ``templateflow``: importing it initialises a home as a side
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
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bidsapp.dataset.atlas_spec import AtlasError, AtlasSpec, spec_text
from bidsapp.dataset.input_files import QueryError, read_json
from bidsapp.dataset.naming import loose_entities

logger = logging.getLogger(__name__)


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
        entities = loose_entities(path.name)
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
        description = read_json(path, "The template description")
    except QueryError:
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


def templateflow_dseg(
    spec: AtlasSpec, space: str, home: Path, voxel_size_mm, allow_download: bool
) -> tuple[Path, int | None, str | None]:
    """Find (and optionally download) the dseg image of a TemplateFlow atlas."""
    folder = home / f"tpl-{space}"
    _check_home(home, folder, spec, space)
    all_variants = _tf_candidates(folder, space, spec.name, "dseg", ".nii.gz")
    if not all_variants:
        raise AtlasError(
            f"Atlas {spec_text(spec)} has no dseg image for space {space} in TemplateFlow "
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
            f"Atlas {spec_text(spec)} is not in TemplateFlow for space {space} "
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
            f"Atlas {spec_text(spec)} (space {space}) is not available offline: {path} is "
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
            f"Downloading atlas {spec_text(spec)} into TEMPLATEFLOW_HOME={home} failed "
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
            f"{spec_text(spec)} cannot be found. Set TEMPLATEFLOW_HOME to a prepared "
            f"TemplateFlow folder, or fetch the atlas:\n  "
            + _prefetch_hint(home, space, _tf_query(spec.name, spec.desc, None, "dseg", ".nii.gz"))
        )
    if not folder.is_dir():
        templates = sorted(p.name[4:] for p in home.glob("tpl-*") if p.is_dir())
        raise AtlasError(
            f"Space {space!r} is not a TemplateFlow template in TEMPLATEFLOW_HOME={home} "
            f"(atlas {spec_text(spec)}); templates there: {', '.join(templates) or 'none'}."
        )


def templateflow_lut(
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
            f"Atlas {spec_text(spec)} has no dseg.tsv look-up table in {folder} "
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
        entities = loose_entities(path.name)
        if set(entities) - {"tpl", "res", "atlas", "desc"}:
            continue
        desc = entities.get("desc")
        found.add(f"{entities['atlas']}:{desc}" if desc else entities["atlas"])
    return sorted(found)
