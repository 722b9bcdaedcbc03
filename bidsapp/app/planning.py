"""Output planning: every output name of an invocation computed before anything is written.

Part of the app layer. Two jobs (two inputs, or two atlases of one label) that would write one
file both fail, with a message naming every input involved: bidsapp never picks one silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bidsapp.app.atlases import AtlasTarget
from bidsapp.app.config import RunConfig
from bidsapp.app.resume import input_files
from bidsapp.app.run_inputs import RunInputs
from bidsapp.app.status import RunStatus, one_line


def plan_outputs(
    jobs: Sequence[tuple[RunInputs, list[AtlasTarget]]], config: RunConfig
) -> tuple[list[tuple[RunInputs, list[AtlasTarget]]], list[tuple[RunStatus, Any]]]:
    """Name every output of every job before anything is written; refuse shared names.

    Two jobs (two inputs, or two atlases of one label) that would write one file all fail,
    with a message naming every input involved: bidsapp never picks one silently.

    Parameters
    ----------
    jobs : sequence
        ``(inputs, atlas targets)`` pairs.
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    jobs : list
        The jobs left, each with the atlases whose outputs no other job claims.
    stopped : list
        ``(failed RunStatus, RunOutputPaths or None)`` for each refused run and atlas; the
        paths name the contested set (whose old files must not look current).
    """
    planned: dict[tuple[int, int], Any] = {}
    claims: dict[Path, list[tuple[int, int]]] = {}
    stopped: list[tuple[RunStatus, Any]] = []
    for j, (inputs, targets) in enumerate(jobs):
        for t, target in enumerate(targets):
            try:
                paths = run_paths(config, inputs.entities, target.atlas.label)
            except ValueError as err:
                reason = f"{inputs.bold}: its outputs cannot be named: {one_line(err)}"
                status = RunStatus(inputs.name, inputs.entities, target.atlas.label, "failed")
                status.reason = reason
                stopped.append((status, None))
                continue
            planned[(j, t)] = paths
            shared = set(paths.shared())
            for path in paths.all():
                owners = claims.setdefault(path, [])
                # The atlases of one run share its design and outliers files: one claim.
                if path in shared and any(job == j for job, _ in owners):
                    continue
                owners.append((j, t))

    def identity(owner: tuple[int, int]) -> tuple:
        inputs, targets = jobs[owner[0]]
        atlas = targets[owner[1]].atlas
        return (tuple(input_files(inputs).values()), str(atlas.dseg), targets[owner[1]].digest)

    contested: dict[tuple[int, int], Path] = {}
    duplicates: set[tuple[int, int]] = set()
    for path, owners in claims.items():
        if len(owners) < 2:
            continue
        if len({identity(o) for o in owners}) == 1:
            # The same files read with the same atlas (e.g. one ICA-AROMA image found
            # through two resolutions of the preprocessed BOLD): one job, not a choice.
            duplicates.update(owners[1:])
            continue
        for owner in owners:
            contested.setdefault(owner, path)
    duplicates -= set(contested)

    def who(owner: tuple[int, int]) -> str:
        inputs, targets = jobs[owner[0]]
        return f"{inputs.bold} with atlas {targets[owner[1]].atlas.dseg}"

    for owner, path in sorted(contested.items()):
        inputs, targets = jobs[owner[0]]
        involved = "; ".join(who(o) for o in claims[path])
        reason = (
            f"{path.name} would be written by {len(claims[path])} inputs ({involved}); "
            "bidsapp does not pick one: select one with --bids-filter-file or rename an atlas"
        )
        status = RunStatus(inputs.name, inputs.entities, targets[owner[1]].atlas.label, "failed")
        status.reason = reason
        stopped.append((status, planned[owner]))
    kept = []
    for j, (inputs, targets) in enumerate(jobs):
        left = [
            t
            for i, t in enumerate(targets)
            if (j, i) in planned and (j, i) not in contested and (j, i) not in duplicates
        ]
        if left:
            kept.append((inputs, left))
    return kept, stopped


def run_paths(config: RunConfig, entities: dict[str, Any], label: str) -> Any:
    """Output paths of one run and atlas label under the invocation's settings.

    Raises
    ------
    ValueError
        When they cannot be named (see :func:`bidsapp.dataset.run_outputs.output_paths`).
    """
    from bidsapp.dataset import run_outputs

    relmats = run_outputs.extra_relmat_keys(config.run_measures, config.fisher_z)
    return run_outputs.output_paths(
        config.output_dir,
        entities,
        label,
        config.extraction.strategy,
        config.denoise.label,
        relmats,
    )


def set_paths(config: RunConfig, entities: dict[str, str], label: str) -> Any:
    """Output paths of one run and atlas label, or None when they cannot be named."""
    try:
        return run_paths(config, entities, label)
    except ValueError:
        return None
