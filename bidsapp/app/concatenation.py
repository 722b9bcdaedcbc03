"""Per-subject connectivity from a task's runs concatenated (``--concatenate-runs``).

Part of the app layer; called when a subject is finished, under its lock. For each set of runs
that differ only by their ``run-`` entity (same subject, session, task, acquisition, space,
atlas, statistic, denoising, ...), the cleaned timeseries TSVs of that subject's finished runs
found in its folder are stacked in run order, exactly as written (each run already cleaned and
standardised on its own by ``--standardize``; no further scaling), and the requested measures
are computed on the stack (:func:`bidsapp.app.process.relmat_files`), written under the
per-run names without ``run-``::

    sub-<s>/[ses-<x>/]func/sub-<s>[_ses-<x>]_task-<t>_..._stat-<measure>_desc-<D>_relmat.tsv

A region ``n/a`` in any run is ``n/a`` in the result. A run's TSV is used only when its bytes
match the SHA-256 its sidecar records. Runs named without ``run-`` have no separate
per-subject file (their per-run matrices already are one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bidsapp.app.config import RunConfig
from bidsapp.app.process import relmat_files
from bidsapp.app.progress import progress
from bidsapp.app.status import RunStatus, one_line

logger = logging.getLogger(__name__)

CONCATENATION = (
    "The timeseries TSVs of the runs listed in Sources (each cleaned and standardised on its "
    "own, as written), stacked in that order along time; regions n/a in any run are n/a."
)


class ConcatenationError(ValueError):
    """The runs of a task cannot be concatenated (the message names the file)."""


def _run_sort_key(entities: dict[str, Any]) -> tuple:
    run = str(entities.get("run") or "")
    return (0, int(run), run) if run.isdigit() else (1, 0, run)


def _checked_timeseries(path: Path) -> pd.DataFrame:
    """Read a run's timeseries TSV, refusing one that differs from its sidecar's record."""
    from bidsapp.dataset import fileio, jsonio, run_outputs, tsvio

    raw = fileio.read_regular_bytes(path)
    if raw is None:
        raise ConcatenationError(f"{path}: not a regular file")
    sidecar = jsonio.read_sidecar(path.with_name(path.name[: -len(".tsv")] + ".json")) or {}
    members = sidecar.get(run_outputs.OUTPUT_FILES_KEY)
    if not isinstance(members, dict) or members.get(path.name) != fileio.sha256_digest(raw):
        raise ConcatenationError(
            f"{path}: its content differs from the SHA-256 its sidecar records; run the "
            "participant level again"
        )
    return tsvio.numeric_table(raw.decode("utf-8"))


def _node_files(path: Path) -> list[str]:
    """Return the atlas files (BIDS URIs) recorded in a timeseries sidecar."""
    from bidsapp.dataset import jsonio

    sidecar = jsonio.read_sidecar(path.with_name(path.name[: -len(".tsv")] + ".json")) or {}
    atlas = sidecar.get("Atlas") or {}
    return [atlas[k] for k in ("Image", "LookUpTable") if isinstance(atlas.get(k), str)]


def concatenated_files(
    config: RunConfig, status: RunStatus
) -> tuple[Any, list[Path], dict[Path, str]] | None:
    """Name, find and compute the per-subject matrices of one run's task.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.
    status : RunStatus
        One finished run of the set.

    Returns
    -------
    tuple or None
        ``(per-subject RunOutputPaths, runs' timeseries used, {path: text} to write)``;
        None when the run is named without ``run-``.

    Raises
    ------
    ConcatenationError
        If a run's TSV is edited or its regions differ from the others'.
    """
    from bidsapp.dataset import jsonio, naming, run_outputs, tsvio

    if not status.entities.get("run"):
        return None
    stat, desc = config.extraction.strategy, config.denoise.label
    entities = {k: v for k, v in status.entities.items() if k != "run"}
    relmats = run_outputs.extra_relmat_keys(config.run_measures, config.fisher_z)
    paths = run_outputs.output_paths(config.output_dir, entities, status.atlas, stat, desc, relmats)
    if paths.timeseries.exists():  # a run named without run-: its files have these names
        raise ConcatenationError(
            f"{paths.timeseries.name} is a run's own output (named without run-); the "
            "per-subject matrices would replace its files"
        )
    one = run_outputs.output_paths(config.output_dir, status.entities, status.atlas, stat, desc)
    # The run's siblings: timeseries whose entities differ from this run's by run- only.
    wanted = {k: v for k, v in naming.name_entities(one.timeseries.name).items() if k != "run"}
    runs = []
    for path in one.directory.glob("*_timeseries.tsv"):
        found = naming.name_entities(path.name)
        if found.get("run") and {k: v for k, v in found.items() if k != "run"} == wanted:
            runs.append((_run_sort_key(found), path))
    used = [path for _, path in sorted(runs)]
    tables = [_checked_timeseries(path) for path in used]
    columns = list(tables[0].columns)
    for path, table in zip(used, tables, strict=True):
        if list(table.columns) != columns:
            raise ConcatenationError(f"{path}: its regions differ from those of {used[0].name}")
    stacked = pd.concat(tables, ignore_index=True)
    sources = [naming.bids_uri(p, root=config.output_dir, dataset="") for p in used]
    texts: dict[Path, str] = {}
    matrices = relmat_files(stacked, _node_files(used[0]), sources, config)
    targets = {"correlation": (paths.relmat, paths.relmat_json)}
    targets.update({key: (tsv, js) for key, tsv, js in paths.extra_relmats})
    for key, (matrix, sidecar) in matrices.items():
        tsv, js = targets[key]
        sidecar = {
            **sidecar,
            "Concatenation": CONCATENATION,
            "NumberOfRuns": len(used),
            "VolumesPerRun": [len(t) for t in tables],
        }
        table = matrix.copy()
        table.insert(0, "Node", columns)
        texts[tsv] = tsvio.tsv_text(table.reset_index(drop=True), path=tsv)
        texts[js] = jsonio.json_text(sidecar)
    return paths, used, texts


def write_concatenated(config: RunConfig, statuses: Sequence[RunStatus]) -> int:
    """Write the per-subject matrices of every task with a finished run; never raises.

    Matrices of measures no longer requested are removed with the set. A task whose runs
    cannot be concatenated gets a warning line naming the file; its other outputs stand.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.
    statuses : sequence of RunStatus
        The subject's run outcomes of this invocation (``ok`` ones name the tasks).

    Returns
    -------
    int
        Sets written.
    """
    from bidsapp.dataset import fileio

    done: set[str] = set()
    written = 0
    for status in statuses:
        # one set per subject, session, task, ... and atlas: its runs differ by run- only
        key = (status.atlas, sorted((k, str(v)) for k, v in status.entities.items() if k != "run"))
        if status.status != "ok" or repr(key) in done:
            continue
        done.add(repr(key))
        try:
            found = concatenated_files(config, status)
            if found is None:
                continue
            paths, _, texts = found
            every = [paths.relmat, paths.relmat_json, *paths.others()]
            every += [p for _, tsv, js in paths.extra_relmats for p in (tsv, js)]
            fileio.ensure_directory(config.output_dir, paths.directory)
            fileio.atomic_write_set(texts, remove=[p for p in every if p not in texts])
            written += 1
        except (OSError, ValueError) as err:
            logger.debug("concatenation of %s failed", status.name, exc_info=True)
            progress.warning(
                f"warning: sub-{status.subject} task-{status.entities.get('task')}: "
                f"concatenated runs not written: {one_line(err)}"
            )
    return written
