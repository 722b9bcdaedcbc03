"""Participant report: ``OUTPUT_DIR/sub-<label>.html``, built from what is on disk.

The report reads only files: the subject's status table (``logs/sub-<label>_status.tsv``),
the timeseries, coverage and sidecars written for each run, the atlas copies under
``sourcedata/atlases`` and the inputs named in each sidecar's ``Sources`` (BIDS URIs resolved
through ``dataset_description.json``'s ``DatasetLinks``). It can therefore be rebuilt at any
time, and the same reading code (:func:`collect_runs`) serves the group level.

One section per run, atlas and denoising shows: the parameters, the atlas outlines over the
run's mean BOLD and brain mask, per-region coverage (regions set to ``n/a`` named), framewise
displacement with removed volumes marked, a carpet plot, the connectivity matrix, and the
run's warnings. Failures and warnings of the whole subject come first, in words.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.dataset.naming import ENTITY_ORDER, RUN_ENTITIES
from bidsapp.report import html as H

logger = logging.getLogger(__name__)

__all__ = [
    "RunRecord",
    "collect_runs",
    "parse_bids_name",
    "resolve_source",
    "run_connectivity",
    "section_anchor",
    "write_participant_report",
]

#: Filename keys -> pybids entity names, for the entities bidsapp writes in output names.
_LONG_NAMES = {short: long for long, short in ENTITY_ORDER}
#: Entities identifying a run (in BIDS order), as in the status table.
RUN_KEYS = (*RUN_ENTITIES, "space")
#: Latest outcomes whose outputs are never used, even if older files remain on disk.
LEFT_OUT_STATUSES = frozenset({"failed", "excluded"})
#: Status values of older versions and what they mean now: a rerun that found the outputs
#: complete wrote ``skipped`` (today the original outcome is kept).
_LEGACY_STATUSES = {"skipped": "ok"}
_SHORT_NAMES = {v: k for k, v in _LONG_NAMES.items()}
#: ``.bidsignore`` pattern for the reports at the output root (the schema has no HTML).
REPORT_BIDSIGNORE = ("*.html",)


# --------------------------------------------------------------------------------------
# Reading participant outputs
# --------------------------------------------------------------------------------------


def parse_bids_name(name: str) -> dict[str, str]:
    """Split a BIDS file name into entities (pybids names), suffix and extension.

    Parameters
    ----------
    name : str
        A file name such as ``sub-01_task-rest_atlas-X_stat-mean_desc-simple_timeseries.tsv``.

    Returns
    -------
    dict of str to str
        Entities under their pybids names (``subject``, ``task``, ``atlas``, ``stat``...;
        unknown keys are kept as written), plus ``suffix`` and ``extension``.
    """
    stem, _, extension = name.partition(".")
    parts = stem.split("_")
    out: dict[str, str] = {"suffix": parts[-1], "extension": f".{extension}" if extension else ""}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if sep:
            out[_LONG_NAMES.get(key, key)] = value
    return out


def run_label(entities: dict[str, Any]) -> str:
    """Return the run's name without subject and space (``ses-1_task-rest_run-1``).

    Parameters
    ----------
    entities : dict
        pybids entity names and values.

    Returns
    -------
    str
        BIDS-style ``key-value`` pairs joined by underscores.
    """
    keys = [k for k in RUN_KEYS if k not in ("subject", "space")]
    parts = [f"{_SHORT_NAMES[k]}-{entities[k]}" for k in keys if _present(entities.get(k))]
    return "_".join(parts) or "run"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value != ""


def _text(value: Any) -> str:
    return str(value) if _present(value) else ""


@dataclass
class RunRecord:
    """One run x atlas x denoising outcome, from the status table and the files on disk.

    Attributes
    ----------
    entities : dict of str to str
        Run entities (pybids names, ``space`` included; absent ones omitted).
    atlas : str
        Atlas label.
    denoise : str
        Denoising label (the ``desc-`` entity).
    stat : str
        Extraction statistic label (the ``stat-`` entity); ``""`` when unknown.
    status : str
        ``ok``, ``failed`` or ``excluded`` (left out on purpose, e.g. below ``--min-time``);
        ``skipped`` in tables of older versions is read as ``ok``.
    reason : str
        Why the run failed or was excluded, or warnings of a successful run.
    n_volumes, n_volumes_kept : int or None
        Volumes in the BOLD series and volumes kept after censoring.
    mean_fd : float or None
        Mean framewise displacement in mm.
    n_regions_low_coverage : int or None
        Regions written as ``n/a`` for lack of brain-mask coverage.
    timeseries : Path or None
        The timeseries TSV (None for failed runs).
    sidecar : dict
        The timeseries JSON sidecar (empty when absent).
    """

    entities: dict[str, str]
    atlas: str
    denoise: str
    stat: str = ""
    status: str = "ok"
    reason: str = ""
    n_volumes: int | None = None
    n_volumes_kept: int | None = None
    mean_fd: float | None = None
    n_regions_low_coverage: int | None = None
    timeseries: Path | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        """Subject label."""
        return self.entities.get("subject", "")

    @property
    def name(self) -> str:
        """Run name without subject and space, e.g. ``task-rest_run-1``."""
        return run_label(self.entities)

    @property
    def has_outputs(self) -> bool:
        """Whether the run's timeseries exist and may be used (not failed nor excluded)."""
        return self.status not in LEFT_OUT_STATUSES and self.timeseries is not None

    def key(self) -> tuple[str, ...]:
        """Identity of the record: run entities, atlas and denoising label."""
        return (*(self.entities.get(k, "") for k in RUN_KEYS), self.atlas, self.denoise)

    def sibling(self, stat: str, desc: str | None, suffix: str) -> Path | None:
        """Path of another output of this run (coverage, relmat), or None without outputs.

        Parameters
        ----------
        stat : str
            ``stat-`` value of the sibling (``coverage``, ``pearsoncorrelation``).
        desc : str or None
            ``desc-`` value of the sibling, or None for none.
        suffix : str
            Suffix of the sibling (``bold``, ``relmat``).

        Returns
        -------
        Path or None
            The sibling's path (it may not exist).
        """
        if self.timeseries is None:
            return None
        name = self.timeseries.name
        head = name.split(f"_stat-{self.stat}_", 1)[0] if self.stat else name.rsplit("_", 1)[0]
        tail = f"_desc-{desc}" if desc else ""
        return self.timeseries.with_name(f"{head}_stat-{stat}{tail}_{suffix}.tsv")


def _int_or_none(value: Any) -> int | None:
    try:
        return None if not _present(value) else int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        out = None if not _present(value) else float(value)
    except (TypeError, ValueError):
        return None
    return None if out is None or not np.isfinite(out) else out


def _first(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if _present(row.get(name)):
            return row[name]
    return None


def _read_sidecar(path: Path) -> dict[str, Any]:
    from bidsapp.dataset import jsonio

    # Never through a planted link: the group level trusts what the sidecar records.
    return jsonio.read_sidecar(path) or {}


def _record_from_file(path: Path) -> RunRecord | None:
    parts = parse_bids_name(path.name)
    if "subject" not in parts or "atlas" not in parts:
        return None
    entities = {k: parts[k] for k in RUN_KEYS if k in parts}
    sidecar = _read_sidecar(path.with_name(path.name[: -len(".tsv")] + ".json"))
    retained = sidecar.get("RetainedVolumes")
    below = sidecar.get("RegionsBelowCoverage")
    return RunRecord(
        entities=entities,
        atlas=parts["atlas"],
        denoise=parts.get("desc", ""),
        stat=parts.get("stat", ""),
        n_volumes=_int_or_none(sidecar.get("NumberOfVolumes")),
        n_volumes_kept=len(retained) if isinstance(retained, list) else None,
        mean_fd=_float_or_none(sidecar.get("MeanFramewiseDisplacement")),
        n_regions_low_coverage=len(below) if isinstance(below, list) else None,
        timeseries=path,
        sidecar=sidecar,
    )


def tsv_problem(text: str) -> str | None:
    """Say what makes the text of a TSV written by bidsapp incomplete, or None.

    Every file bidsapp writes ends with a newline and has as many tab-separated fields on
    each line as in its header: a file cut short (a copy that stopped, a full disk) or
    garbled breaks one of the two, where pandas would silently fill the gap with NaN.

    Parameters
    ----------
    text : str
        The file's content.

    Returns
    -------
    str or None
        A short description of the problem, or None when the shape is right.
    """
    if not text.strip():
        return "it is empty"
    if not text.endswith("\n"):
        return "its last line is incomplete (the file was cut short)"
    lines = text[:-1].split("\n")
    width = len(lines[0].split("\t"))
    for number, line in enumerate(lines[1:], start=2):
        fields = len(line.split("\t"))
        if fields != width:
            return f"line {number} has {fields} field(s) but the header has {width}"
    return None


def _read_status_file(path: Path, output_dir: Path) -> list[dict[str, Any]]:
    """Rows of one subject's status table; ValueError/OSError when it cannot be trusted."""
    import stat

    from bidsapp.dataset import fileio, status_tables

    # Checked before reading: a planted link is never followed, a folder never opened.
    kind = stat.S_IFMT(os.lstat(path).st_mode)
    if kind != stat.S_IFREG:
        what = {stat.S_IFLNK: "a symbolic link bidsapp did not make", stat.S_IFDIR: "a folder"}
        raise ValueError(f"it is {what.get(kind, 'not a regular file')}")
    raw = fileio.read_regular_bytes(path)
    if raw is None:  # replaced by a link since the check
        raise ValueError("it is not a regular file")
    problem = tsv_problem(raw.decode("utf-8"))
    if problem:
        raise ValueError(problem)
    subject = path.name[len("sub-") : -len("_status.tsv")]
    table = status_tables.read_subject_status(output_dir, subject)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    for number, row in enumerate(rows, start=2):
        status = _text(row.get("status"))
        status = _LEGACY_STATUSES.get(status, status)
        if status not in status_tables.STATUS_VALUES:
            raise ValueError(f"line {number} has status {row.get('status')!r}")
        row["status"] = status
    return rows


def _status_rows(
    output_dir: Path, subject: str | None, *, quiet: bool = False
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows of the readable status tables, and ``{subject: problem}`` for the others."""
    pattern = f"sub-{subject}_status.tsv" if subject is not None else "sub-*_status.tsv"
    rows: list[dict[str, Any]] = []
    broken: dict[str, str] = {}
    for path in sorted((output_dir / "logs").glob(pattern)):
        try:
            rows.extend(_read_status_file(path, output_dir))
        except (OSError, ValueError, pd.errors.ParserError) as err:
            label = path.name[len("sub-") : -len("_status.tsv")]
            broken[label] = f"status table {path} cannot be trusted ({' '.join(str(err).split())})"
            if not quiet:
                logger.warning("%s; the outputs of sub-%s are not used", broken[label], label)
    return rows, broken


def collect_runs(
    output_dir: str | os.PathLike[str],
    subject: str | None = None,
    *,
    broken: dict[str, str] | None = None,
) -> list[RunRecord]:
    """Gather every run outcome of an output dataset (or of one subject).

    Status rows (``logs/sub-*_status.tsv``) give failures and their reasons; timeseries files
    on disk give the outputs of successful runs, with their sidecars. A timeseries file with
    no status row (for example written by an older version) counts as ``ok``; a status row
    saying ``failed`` or ``excluded`` is kept as such even if older outputs remain on disk
    (they are not used); ``skipped``, written by older versions for a run found complete,
    reads as ``ok``. A status table that is cut short or garbled is not trusted: the
    subject's outputs become ``failed`` records whose reason names the table.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str, optional
        Subject label without ``sub-``; every subject when None.
    broken : dict, optional
        When given, filled with ``{subject: one-line problem}`` for each status table that
        cannot be trusted (a folder, a link, binary junk, a cut-short or garbled row), and
        no warning is logged: the caller reports each table once. The records of such a
        subject name the table in their reason.

    Returns
    -------
    list of RunRecord
        Sorted by subject, run, atlas, denoising and statistic.
    """
    output_dir = Path(output_dir)
    pattern = f"sub-{subject}" if subject is not None else "sub-*"
    on_disk: dict[tuple[str, ...], list[RunRecord]] = {}
    for path in sorted(output_dir.glob(f"{pattern}/**/func/*_timeseries.tsv")):
        record = _record_from_file(path)
        if record is not None:
            on_disk.setdefault(record.key(), []).append(record)

    records: list[RunRecord] = []
    seen: set[tuple[str, ...]] = set()
    rows, untrusted = _status_rows(output_dir, subject, quiet=broken is not None)
    if broken is not None:
        broken.update(untrusted)
    for key, files in on_disk.items():
        for found in files:
            if found.subject in untrusted:
                seen.add(key)
                found.status = "failed"
                found.reason = (
                    untrusted[found.subject]
                    if broken is None  # else the caller shows the problem once
                    else f"not used: logs/sub-{found.subject}_status.tsv cannot be trusted"
                )
                records.append(found)
    for row in rows:
        entities = {k: _text(row.get(k)) for k in RUN_KEYS if _present(row.get(k))}
        base = RunRecord(
            entities=entities,
            atlas=_text(row.get("atlas")),
            denoise=_text(row.get("denoise")),
            stat=_text(row.get("stat")),
            status=_text(row.get("status")) or "ok",
            reason=_text(row.get("reason")),
            n_volumes=_int_or_none(_first(row, "n_volumes", "volumes_total")),
            n_volumes_kept=_int_or_none(_first(row, "n_volumes_kept", "volumes_kept")),
            mean_fd=_float_or_none(row.get("mean_fd")),
            n_regions_low_coverage=_int_or_none(
                _first(row, "n_regions_low_coverage", "regions_below_coverage")
            ),
        )
        key = base.key()
        seen.add(key)
        files = on_disk.get(key, [])
        if base.status in LEFT_OUT_STATUSES or not files:
            if base.status not in LEFT_OUT_STATUSES:
                base.status = "failed"
                base.reason = (
                    f"status says {row.get('status')!r} but no timeseries file was found "
                    f"under {output_dir}" + (f" ({base.reason})" if base.reason else "")
                )
            records.append(base)
            continue
        for found in files:
            found.status = base.status
            found.reason = base.reason
            for name in ("n_volumes", "n_volumes_kept", "mean_fd", "n_regions_low_coverage"):
                if getattr(found, name) is None:
                    setattr(found, name, getattr(base, name))
            records.append(found)
    for key, files in on_disk.items():
        if key not in seen:
            records.extend(files)
    records.sort(key=lambda r: (*r.key(), r.stat))
    return records


# --------------------------------------------------------------------------------------
# Resolving Sources
# --------------------------------------------------------------------------------------


def _uri_to_path(uri: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    return Path(urllib.request.url2pathname(parsed.path))


def _dataset_links(output_dir: Path) -> dict[str, str]:
    description = _read_sidecar(output_dir / "dataset_description.json")
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
class RunInputs:
    """Local paths of the files a run's outputs were made from (None when not found)."""

    bold: Path | None = None
    mask: Path | None = None
    confounds: Path | None = None
    atlas: Path | None = None
    lut: Path | None = None
    missing: list[str] = field(default_factory=list)


def _find_inputs(record: RunRecord, output_dir: Path, bids_dir: Path | None) -> RunInputs:
    inputs = RunInputs()
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


# --------------------------------------------------------------------------------------
# Computations
# --------------------------------------------------------------------------------------


def run_connectivity(timeseries: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation between region timeseries, ``NaN`` for regions without data.

    The same rule as the participant level's ``_relmat.tsv``: regions whose column has a
    non-finite value or no variance are left out (their rows and columns are NaN).

    Parameters
    ----------
    timeseries : pandas.DataFrame
        One column per region, one row per retained volume.

    Returns
    -------
    pandas.DataFrame
        Square region x region matrix indexed by region name.
    """
    values = timeseries.to_numpy(dtype=float)
    valid = np.isfinite(values).all(axis=0)
    valid[valid] = values[:, valid].std(axis=0) > 0
    corr = np.full((values.shape[1], values.shape[1]), np.nan)
    if valid.sum() > 1:
        corr[np.ix_(valid, valid)] = np.corrcoef(values[:, valid], rowvar=False)
    elif valid.sum() == 1:
        corr[np.ix_(valid, valid)] = 1.0
    return pd.DataFrame(corr, index=timeseries.columns, columns=timeseries.columns)


def read_timeseries(path: Path) -> pd.DataFrame:
    """Read a timeseries TSV (``n/a`` as NaN), keeping region names as columns.

    Parameters
    ----------
    path : Path
        A ``_timeseries.tsv`` file.

    Returns
    -------
    pandas.DataFrame
        Float values, one column per region.
    """
    from bidsapp.dataset import tsvio

    return tsvio.read_tsv(path).astype(float)


def _mean_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Mean over time of a 3D/4D image, reading it once, a block of volumes at a time."""
    import nibabel as nib

    from bidsapp import stream

    img = nib.load(str(path))
    shape = img.shape[:3]
    if len(img.shape) == 3:
        return np.asarray(img.dataobj, dtype=float), img.affine
    layout = stream.file_layout(img)
    total = np.zeros(int(np.prod(shape)), dtype=float)
    count = 0
    if layout is not None:
        for _, block in stream.iter_file_blocks(layout):
            total += block.sum(axis=0, dtype=float)
            count += block.shape[0]
    else:  # pragma: no cover - in-memory or exotic images
        data = np.asarray(img.dataobj, dtype=float)
        return data.mean(axis=-1), img.affine
    return (total / max(count, 1)).reshape(shape, order="F"), img.affine


def _non_steady_state(confounds: pd.DataFrame | None, dummy_scans: Any) -> list[int]:
    volumes: set[int] = set()
    if confounds is not None:
        from bidsapp.confounds import non_steady_state_columns

        for column in non_steady_state_columns(confounds.columns):
            flagged = np.flatnonzero(confounds[column].fillna(0).to_numpy() > 0)
            volumes.update(int(v) for v in flagged)
    if isinstance(dummy_scans, int) and dummy_scans > 0:
        volumes.update(range(dummy_scans))
    return sorted(volumes)


def _censoring(denoising: dict[str, Any]) -> tuple[float | None, float | None]:
    """Return the FD (mm) and std DVARS censoring thresholds in force (None: no censoring).

    Explicit values in the sidecar's ``Denoising`` win (0 disables); otherwise a preset with
    the ``scrub`` component censors with its own thresholds.
    """
    explicit = (denoising.get("fd_threshold"), denoising.get("std_dvars_threshold"))
    preset: dict[str, Any] = {}
    name = denoising.get("name")
    if name and name != "none" and not denoising.get("confounds_columns"):
        try:
            from bidsapp.confounds import load_preset

            params = load_preset(name)
            params = params.get("parameters", params)
            if "scrub" in (params.get("strategy") or ()):
                preset = params
        except Exception:  # a preset file that moved: no threshold line, nothing worse
            preset = {}
    defaults = (preset.get("fd_threshold", 0.5), preset.get("std_dvars_threshold", 1.5))
    out = []
    for value, default in zip(explicit, defaults if preset else (None, None), strict=True):
        chosen = value if value is not None else default
        out.append(float(chosen) if chosen else None)
    return out[0], out[1]


def _preset_description(denoising: dict[str, Any]) -> str:
    name = denoising.get("name")
    if denoising.get("confounds_columns"):
        return "explicit confound columns: " + ", ".join(denoising["confounds_columns"])
    if not name or name == "none":
        return "no confound regression"
    try:
        from bidsapp.confounds import load_preset

        return str(load_preset(name).get("description") or name)
    except Exception:
        return str(name)


# --------------------------------------------------------------------------------------
# Report sections
# --------------------------------------------------------------------------------------


def _hz(value: Any) -> str:
    return "none" if value in (None, 0) else f"{float(value):g} Hz"


def _parameters(record: RunRecord, inputs: RunInputs) -> str:
    sc = record.sidecar
    den = sc.get("Denoising") or {}
    ext = sc.get("Extraction") or {}
    atlas = sc.get("Atlas") or {}
    retained = sc.get("RetainedVolumes") or []
    censored = sc.get("CensoredVolumes") or []
    columns = sc.get("ConfoundColumns") or []
    t_r = sc.get("RepetitionTime")
    fd_thr, dvars = _censoring(den)
    censoring = [f"FD > {fd_thr:g} mm" if fd_thr else "", f"std DVARS > {dvars:g}" if dvars else ""]
    denoising = {
        "Denoise strategy": f"{den.get('name', record.denoise)} (desc-{record.denoise})",
        "What it regresses": _preset_description(den),
        "Confound columns": f"{len(columns)} regressors",
        "Censoring": " or ".join(c for c in censoring if c) or "none",
        "Dummy scans": "auto (fMRIPrep's non-steady-state volumes)"
        if den.get("dummy_scans") is None
        else den.get("dummy_scans"),
        "Volumes": f"{len(retained)} kept of {sc.get('NumberOfVolumes', 'n/a')} "
        f"({len(censored)} removed)",
        "Mean framewise displacement": "n/a"
        if record.mean_fd is None
        else f"{record.mean_fd:.3f} mm",
    }
    extraction = {
        "Atlas": f"{atlas.get('Name', record.atlas)} {atlas.get('Description') or ''}".strip()
        + (f" ({atlas.get('Source')})" if atlas.get("Source") else ""),
        "Extraction statistic": ext.get("strategy", record.stat),
        "Standardize": ext.get("standardize"),
        "Detrend": ext.get("detrend"),
        "Filters": f"high-pass {_hz(ext.get('high_pass'))}, low-pass {_hz(ext.get('low_pass'))}",
        "Smoothing": "none"
        if not ext.get("smoothing_fwhm")
        else f"{float(ext['smoothing_fwhm']):g} mm FWHM",
        "Minimum coverage": ext.get("min_coverage"),
        "Repetition time": "n/a" if t_r is None else f"{float(t_r):g} s",
        "Software": f"{sc.get('SoftwareName', 'bidsapp')} {sc.get('SoftwareVersion', '')}",
    }
    parts = [
        '<div class="grid2">'
        + H.definition_table(denoising)
        + H.definition_table(extraction)
        + "</div>"
    ]
    if columns:
        parts.append(
            H.details(
                f"Confound columns ({len(columns)})",
                "<p>" + ", ".join(f"<code>{H.esc(c)}</code>" for c in columns) + "</p>",
            )
        )
    sources = [str(s) for s in sc.get("Sources", []) or []]
    if sources:
        parts.append(
            H.details(
                "Sources",
                "<ul>" + "".join(f"<li><code>{H.esc(s)}</code></li>" for s in sources) + "</ul>",
            )
        )
    return "".join(parts)


def _safe_figure(
    kind: str,
    alt: str,
    caption: str | Callable[[], str],
    draw: Callable[[], str],
    problems: list[str],
) -> str:
    """Draw one figure; a failure becomes a message figure and a warning, never a crash."""
    from bidsapp.report import figures

    try:
        uri = draw()
    except Exception as err:  # one broken input must not lose the whole report
        logger.debug("figure %s failed", kind, exc_info=True)
        message = f"{alt}: not drawn ({type(err).__name__}: {err})"
        problems.append(message)
        uri = figures.plot_message(message)
    text = caption() if callable(caption) else caption
    return H.figure(uri, alt, text, kind=kind)


def _load_grids(inputs: RunInputs, mean_cache: dict[Path, tuple]) -> dict[str, Any]:
    import nibabel as nib

    from bidsapp.image import resample_to_img

    if inputs.bold is None or inputs.atlas is None:
        missing = [n for n, p in (("BOLD", inputs.bold), ("atlas", inputs.atlas)) if p is None]
        raise FileNotFoundError(
            f"{' and '.join(missing)} image not found (Sources: {inputs.missing or 'none'})"
        )
    boldref = _boldref(inputs.bold)
    key = boldref or inputs.bold
    if key not in mean_cache:
        mean_cache[key] = _mean_volume(key)
    mean, affine = mean_cache[key]
    ref = nib.Nifti1Image(mean.astype(np.float32), affine)
    atlas_img = nib.load(str(inputs.atlas))
    labels = resample_to_img(atlas_img, ref, interpolation="nearest")
    images = {"background": ref, "labels": labels}
    if inputs.mask is not None:
        images["mask"] = resample_to_img(nib.load(str(inputs.mask)), ref, interpolation="nearest")
    canonical = {k: nib.as_closest_canonical(v) for k, v in images.items()}
    out: dict[str, Any] = {
        "background": np.asarray(canonical["background"].dataobj, dtype=float),
        "labels": np.asarray(canonical["labels"].dataobj).astype(int),
        "mask": None if "mask" not in canonical else np.asarray(canonical["mask"].dataobj) > 0,
        "affine": canonical["background"].affine,
        "from_boldref": boldref is not None,
    }
    return out


def _boldref(bold: Path) -> Path | None:
    """Return fMRIPrep's reference volume beside a preprocessed BOLD, if there is one."""
    name = bold.name
    for pattern in ("_desc-preproc_bold", "_desc-smoothAROMAnonaggr_bold"):
        if pattern in name:
            candidate = bold.with_name(name.replace(pattern, "_boldref"))
            if candidate.is_file():
                return candidate
    return None


def _lut_colors(lut: pd.DataFrame | None) -> dict[int, str] | None:
    if lut is None or "color" not in lut.columns:
        return None
    return {int(i): str(c) for i, c in zip(lut["index"], lut["color"], strict=False) if _present(c)}


def _read_lut(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        from bidsapp.dataset import tsvio

        return tsvio.read_tsv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def _read_confounds(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"])
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def _run_section(
    record: RunRecord, output_dir: Path, bids_dir: Path | None, mean_cache: dict
) -> tuple[str, list[str]]:
    """HTML of one run x atlas x denoising section and the problems met drawing it."""
    from bidsapp.report import figures

    problems: list[str] = []
    sc = record.sidecar
    inputs = _find_inputs(record, output_dir, bids_dir)
    for source in inputs.missing:
        problems.append(f"input not found: {source} (pass the fMRIPrep directory to rebuild)")
    timeseries = read_timeseries(record.timeseries)
    names = [str(c) for c in timeseries.columns]
    lut = _read_lut(inputs.lut)
    networks = figures.region_networks(names, lut)
    t_r = _float_or_none(sc.get("RepetitionTime"))
    n_volumes = _int_or_none(sc.get("NumberOfVolumes"))
    retained = [int(v) for v in sc.get("RetainedVolumes") or range(len(timeseries))]
    censored = [int(v) for v in sc.get("CensoredVolumes") or []]
    den = sc.get("Denoising") or {}
    ext = sc.get("Extraction") or {}
    threshold = float(ext.get("min_coverage", 0.5))
    group_note = (
        f"grouped into {len(set(networks))} networks read from the atlas look-up table"
        if networks
        else "in look-up-table order (the region names carry no network)"
    )

    parts = [H.section("Parameters", _parameters(record, inputs), level=3)]

    def contours() -> str:
        grids = _load_grids(inputs, mean_cache)
        background_note.append(
            "fMRIPrep's BOLD reference" if grids["from_boldref"] else "the run's mean BOLD"
        )
        return figures.plot_atlas_contours(
            grids["background"],
            grids["labels"],
            grids["mask"],
            grids["affine"],
            colors=_lut_colors(lut),
        )

    background_note: list[str] = []

    def contours_caption() -> str:
        what = background_note[0] if background_note else "the run's mean BOLD"
        return (
            f"Atlas {record.atlas}: coloured outlines of its regions (resampled to the BOLD "
            f"grid, nearest neighbour) over {what}; green: brain mask outline. Sagittal, "
            "coronal and axial slices spread over the atlas extent."
        )

    fig = _safe_figure(
        "contours",
        "Atlas regions over the mean BOLD and brain mask",
        contours_caption,
        contours,
        problems,
    )
    parts.append(H.section("Atlas over the BOLD", fig, level=3))

    coverage_path = record.sibling("coverage", None, "bold")
    coverage = None
    if coverage_path is not None and coverage_path.is_file():
        table = _read_lut(coverage_path)
        if table is not None and {"Node", "coverage"} <= set(table.columns):
            coverage = table.set_index(table["Node"].astype(str))["coverage"].astype(float)
    below_named = [str(n) for n in sc.get("RegionsBelowCoverage") or []]
    empty = [n for n in names if timeseries[n].isna().all() and n not in below_named]
    cov_values = (
        coverage.reindex(names).to_numpy() if coverage is not None else np.full(len(names), np.nan)
    )
    cov_html = _safe_figure(
        "coverage",
        "Per-region coverage by the brain mask",
        f"Fraction of each region's voxels inside the brain mask, {group_note}; red: below "
        f"the {threshold:g} threshold, written as n/a. "
        + ("" if coverage is not None else "(coverage table not found: nothing to plot)"),
        lambda: figures.plot_coverage(cov_values, threshold, networks),
        problems,
    )
    if below_named or empty:
        listing = "".join(f"<li>{H.esc(n)}</li>" for n in below_named + empty)
        cov_html += (
            f"<p><strong>{len(below_named) + len(empty)} region(s) set to n/a</strong> "
            f"(coverage below {threshold:g}, or no voxel in the BOLD grid):</p>"
            f'<ul class="names">{listing}</ul>'
        )
    else:
        cov_html += H.alert(
            [f"All {len(names)} regions have coverage of at least {threshold:g}."], "ok"
        )
    parts.append(H.section("Coverage", cov_html, level=3))

    confounds = _read_confounds(inputs.confounds)
    fd = None
    fd_column = None
    if confounds is not None:
        from bidsapp.confounds import motion_measure_columns

        fd_column = motion_measure_columns(confounds.columns)["framewise_displacement"]
    if confounds is not None and fd_column is not None:
        fd = pd.to_numeric(confounds[fd_column], errors="coerce").to_numpy()
    nss = _non_steady_state(confounds, den.get("dummy_scans"))
    scrubbed = sorted(set(censored) - set(nss))
    fd_threshold, _ = _censoring(den)
    parts.append(
        H.section(
            "Framewise displacement",
            _safe_figure(
                "fd",
                "Framewise displacement over time",
                "Framewise displacement (mm) per volume from the fMRIPrep confounds; "
                + (
                    f"red: {len(scrubbed)} volume(s) censored by the denoising"
                    + (f" (FD threshold {fd_threshold:g} mm, dashed)" if fd_threshold else "")
                    if scrubbed
                    else "no volume censored by the denoising"
                )
                + (
                    f"; grey: {len(nss)} non-steady-state volume(s) dropped. "
                    if nss
                    else "; no non-steady-state volume. "
                )
                + f"{len(retained)} of {n_volumes} volumes kept.",
                lambda: figures.plot_framewise_displacement(
                    fd, t_r, scrubbed, nss, fd_threshold, n_volumes
                ),
                problems,
            ),
            level=3,
        )
    )
    parts.append(
        H.section(
            "Carpet plot",
            _safe_figure(
                "carpet",
                "Carpet plot of the region timeseries",
                f"Denoised region timeseries (one row per region, {group_note}), z-scored per "
                "row for display, at their original volume positions: pale red columns are "
                "removed volumes (they line up with the plot above), pale red rows are regions "
                "set to n/a.",
                lambda: figures.plot_carpet(
                    timeseries.to_numpy(), retained, n_volumes, networks, t_r
                ),
                problems,
            ),
            level=3,
        )
    )
    parts.append(
        H.section(
            "Connectivity",
            _safe_figure(
                "connectivity",
                "Region by region connectivity matrix",
                f"Pearson correlation between the denoised region timeseries (the run's "
                f"_relmat.tsv), {group_note}; grey: regions set to n/a.",
                lambda: figures.plot_connectivity(
                    run_connectivity(timeseries).to_numpy(), names, networks
                ),
                problems,
            ),
            level=3,
        )
    )
    warnings = [str(w) for w in sc.get("Warnings") or []] + problems
    if warnings:
        parts.append(H.section("Warnings", H.alert(warnings, "warning"), level=3))
    return "".join(parts), problems


def _status_table(records: Sequence[RunRecord]) -> str:
    columns = [
        "run",
        "atlas",
        "denoise",
        "stat",
        "status",
        "volumes kept",
        "mean FD (mm)",
        "regions n/a",
        "reason / warnings",
    ]
    rows = []
    classes = []
    for r in records:
        kept = (
            f"{r.n_volumes_kept} / {r.n_volumes}"
            if r.n_volumes_kept is not None and r.n_volumes is not None
            else "n/a"
        )
        if r.has_outputs:
            link = f'<a href="#{section_anchor(r)}">{H.esc(r.name)}</a>'
        else:
            link = H.esc(r.name)
        rows.append(
            [
                link,
                r.atlas,
                r.denoise,
                r.stat or "n/a",
                H.badge(r.status),
                kept,
                r.mean_fd,
                r.n_regions_low_coverage,
                r.reason,
            ]
        )
        classes.append(r.status if r.status != "ok" else "")
    return H.table(columns, rows, classes, raw_columns=("run", "status"), nowrap_columns=("atlas",))


def section_anchor(record: RunRecord) -> str:
    """Return the id of a run's section in its subject's report (for links to it).

    Parameters
    ----------
    record : RunRecord
        The run.

    Returns
    -------
    str
        An HTML id such as ``task-rest-run-1-Schaefer100-mean-simple``.
    """
    return H.anchor_id(f"{record.name}-{record.atlas}-{record.stat}-{record.denoise}")


def build_participant_report(
    output_dir: str | os.PathLike[str], subject: str, bids_dir: str | os.PathLike[str] | None = None
) -> H.HTMLReport:
    """Build (without writing) the report of one subject.

    Parameters
    ----------
    output_dir : path-like
        Output dataset root.
    subject : str
        Subject label, with or without ``sub-``.
    bids_dir : path-like, optional
        The fMRIPrep dataset, when it is not (or no longer) where ``DatasetLinks`` says.

    Returns
    -------
    HTMLReport
        The report.
    """
    from bidsapp import __version__

    output_dir = Path(output_dir)
    subject = subject[4:] if subject.startswith("sub-") else subject
    bids_path = Path(bids_dir) if bids_dir is not None else None
    records = collect_runs(output_dir, subject)
    done = [r for r in records if r.has_outputs]
    failed = [r for r in records if r.status in LEFT_OUT_STATUSES]

    sections: list[str] = []
    links: list[tuple[str, str]] = [("summary", "Summary")]
    all_problems: list[str] = []
    mean_cache: dict[Path, tuple] = {}
    for record in done:
        anchor = section_anchor(record)
        title = f"{record.name} · atlas-{record.atlas} · {record.denoise}"
        if record.stat:
            title += f" · stat-{record.stat}"
        try:
            content, problems = _run_section(record, output_dir, bids_path, mean_cache)
        except Exception as err:  # unreadable outputs: say so in the report, go on
            logger.warning("Report section %s failed: %s", title, err, exc_info=True)
            problems = [f"{title}: cannot build this section ({type(err).__name__}: {err})"]
            content = H.alert(problems, "error")
        all_problems.extend(
            f"{record.name} [{record.atlas}, {record.denoise}]: {p}" for p in problems
        )
        sections.append(H.section(title, content, anchor=anchor))
        label = " · ".join(
            [record.name]
            + ([record.atlas] if len({r.atlas for r in done}) > 1 else [])
            + ([f"stat-{record.stat}"] if len({r.stat for r in done}) > 1 else [])
            + [record.denoise]
        )
        links.append((anchor, label))

    failures = [
        f"{r.name} [{r.atlas}, {r.denoise}] {r.status.upper()}: {r.reason or 'no reason given'}"
        for r in failed
    ]
    notes: list[str] = []
    for r in done:
        for w in r.sidecar.get("Warnings") or []:
            notes.append(f"{r.name} [{r.atlas}, {r.denoise}]: {w}")
        if r.n_regions_low_coverage:
            notes.append(
                f"{r.name} [{r.atlas}, {r.denoise}]: {r.n_regions_low_coverage} region(s) "
                "below the coverage threshold were written as n/a"
            )
    notes.extend(all_problems)
    messages = failures + notes
    summary = [
        f'<p class="lead">Output dataset <code>{H.esc(output_dir)}</code>; report built '
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by bidsapp {H.esc(__version__)}."
        f" {len(done)} run output(s), {len(failed)} failure(s).</p>"
    ]
    if not records:
        summary.append(
            H.alert([f"No participant-level outputs or status found for sub-{subject}."], "error")
        )
    if failures:
        summary.append(H.alert(failures, "error", title="Failures"))
    if notes:
        summary.append(H.alert(notes, "warning", title="Warnings"))
    if records and not messages:
        summary.append(H.alert(["Every run succeeded without warnings."], "ok"))
    if records:
        summary.append(_status_table(records))
    body = (
        f"<h1>bidsapp report: sub-{H.esc(subject)}</h1>"
        + H.nav(links)
        + H.section("Summary", "".join(summary), anchor="summary")
        + "".join(sections)
        + f"<footer>bidsapp {H.esc(__version__)}. Self-contained page: figures are embedded, "
        "nothing is fetched.</footer>"
    )
    return H.HTMLReport(f"sub-{subject} · bidsapp", body, warnings=messages)


def write_participant_report(output_dir: Path, subject: str, bids_dir: Path | None = None) -> Path:
    """Write ``OUTPUT_DIR/sub-<label>.html`` from the subject's outputs on disk.

    Also makes sure ``.bidsignore`` lists ``*.html``.

    Parameters
    ----------
    output_dir : Path
        Output dataset root.
    subject : str
        Subject label, with or without ``sub-``.
    bids_dir : Path, optional
        The fMRIPrep dataset, when it is not where ``DatasetLinks`` says.

    Returns
    -------
    Path
        The report written.
    """
    from bidsapp.dataset import dataset_description

    subject = subject[4:] if subject.startswith("sub-") else subject
    report = build_participant_report(output_dir, subject, bids_dir)
    path = report.save_as_html(Path(output_dir) / f"sub-{subject}.html")
    dataset_description.write_bidsignore(output_dir, REPORT_BIDSIGNORE)
    return path
