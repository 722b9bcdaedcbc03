"""Reading participant outputs: status tables, timeseries names and sidecars -> :class:`RunRecord`.

Part of the report layer, and the one reader of what the participant level wrote: the
participant report and the group level (:mod:`bidsapp.app.group_inputs`) both use
:func:`collect_runs`. A damaged status table is reported once; its good rows are kept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.dataset.naming import ENTITY_KEYS, RUN_KEY_ENTITIES, name_entities

logger = logging.getLogger(__name__)


#: Latest outcomes whose outputs are never used, even if older files remain on disk.
LEFT_OUT_STATUSES = frozenset({"failed", "excluded"})


#: Status values of older versions and what they mean now: a rerun that found the outputs
#: complete wrote ``skipped`` (today the original outcome is kept).
_LEGACY_STATUSES = {"skipped": "ok"}


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
    keys = [k for k in RUN_KEY_ENTITIES if k not in ("subject", "space")]
    parts = [f"{ENTITY_KEYS[k]}-{entities[k]}" for k in keys if present(entities.get(k))]
    return "_".join(parts) or "run"


def present(value: Any) -> bool:
    """Whether a table cell holds a value (not None, NaN or empty)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value != ""


def _text(value: Any) -> str:
    return str(value) if present(value) else ""


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
        return (*(self.entities.get(k, "") for k in RUN_KEY_ENTITIES), self.atlas, self.denoise)

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


def int_or_none(value: Any) -> int | None:
    """Return the cell as an int, or None when absent or not a number."""
    try:
        return None if not present(value) else int(value)
    except (TypeError, ValueError):
        return None


def float_or_none(value: Any) -> float | None:
    """Return the cell as a finite float, or None when absent, not a number or not finite."""
    try:
        out = None if not present(value) else float(value)
    except (TypeError, ValueError):
        return None
    return None if out is None or not np.isfinite(out) else out


def _first(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if present(row.get(name)):
            return row[name]
    return None


def read_sidecar(path: Path) -> dict[str, Any]:
    """Read a JSON sidecar, never through a link; {} when unreadable."""
    from bidsapp.dataset import jsonio

    # Never through a planted link: the group level trusts what the sidecar records.
    return jsonio.read_sidecar(path) or {}


def _record_from_file(path: Path) -> RunRecord | None:
    parts = name_entities(path.name)
    if "subject" not in parts or "atlas" not in parts:
        return None
    entities = {k: parts[k] for k in RUN_KEY_ENTITIES if k in parts}
    sidecar = read_sidecar(path.with_name(path.name[: -len(".tsv")] + ".json"))
    retained = sidecar.get("RetainedVolumes")
    below = sidecar.get("RegionsBelowCoverage")
    return RunRecord(
        entities=entities,
        atlas=parts["atlas"],
        denoise=parts.get("desc", ""),
        stat=parts.get("stat", ""),
        n_volumes=int_or_none(sidecar.get("NumberOfVolumes")),
        n_volumes_kept=len(retained) if isinstance(retained, list) else None,
        mean_fd=float_or_none(sidecar.get("MeanFramewiseDisplacement")),
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
    tabs = lines[0].count("\t")
    for number, line in enumerate(lines[1:], start=2):
        # Tabs counted, not split: ~10x faster on a table of 400 regions.
        if line.count("\t") != tabs:
            fields = line.count("\t") + 1
            return f"line {number} has {fields} field(s) but the header has {tabs + 1}"
    return None


def _read_status_file(path: Path) -> list[dict[str, Any]]:
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
    rows = status_tables.status_rows(raw)
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
            rows.extend(_read_status_file(path))
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
        entities = {k: _text(row.get(k)) for k in RUN_KEY_ENTITIES if present(row.get(k))}
        base = RunRecord(
            entities=entities,
            atlas=_text(row.get("atlas")),
            denoise=_text(row.get("denoise")),
            stat=_text(row.get("stat")),
            status=_text(row.get("status")) or "ok",
            reason=_text(row.get("reason")),
            n_volumes=int_or_none(_first(row, "n_volumes", "volumes_total")),
            n_volumes_kept=int_or_none(_first(row, "n_volumes_kept", "volumes_kept")),
            mean_fd=float_or_none(row.get("mean_fd")),
            n_regions_low_coverage=int_or_none(
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
