"""Atlases of an invocation, resolved once per space and voxel size and copied into the outputs.

Part of the app layer, above :mod:`bidsapp.dataset.atlas` (finding and checking atlases) and
:mod:`bidsapp.dataset.outputs` (the atlas dataset copy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bidsapp.app.checks import atlas_labels
from bidsapp.app.config import RunConfig
from bidsapp.app.progress import progress
from bidsapp.app.run_inputs import RunInputs
from bidsapp.app.status import one_line
from bidsapp.dataset.atlas import Atlas


@dataclass(frozen=True)
class AtlasTarget:
    """An atlas resolved for one space and voxel size, with its copy in the outputs.

    Attributes
    ----------
    atlas : Atlas
        The atlas.
    node_files : tuple of str
        BIDS URIs (``bids:atlases:...``) of the copied image and look-up table.
    digest : str
        Hash of the image and look-up table contents (part of the resume fingerprint).
    """

    atlas: Atlas
    node_files: tuple[str, ...]
    digest: str


def grid_key(inputs: RunInputs) -> tuple:
    """Key of a run's grid: its space and voxel size (mm, rounded to 0.001)."""
    return (inputs.space, tuple(round(z, 3) for z in inputs.voxel_size_mm))


def _digest(atlas: Atlas) -> str:
    sha = hashlib.sha256(Path(atlas.dseg).read_bytes())
    sha.update(atlas.lut[["index", "name"]].to_csv(sep="\t", index=False).encode())
    return sha.hexdigest()[:16]


def _atlas_reason(spec: str, space: str, err: Exception) -> str:
    """One-line reason for the runs an atlas error stops (the full message is printed)."""
    first = one_line(str(err).split(". ")[0].split(":\n")[0]) or type(err).__name__
    return f"atlas {spec} is unusable in space {space} (see 'atlas error' above): {first}"


def resolve_atlases(
    jobs: Sequence[RunInputs], config: RunConfig
) -> tuple[dict[tuple, list[AtlasTarget]], dict[tuple, list[tuple[str, str]]]]:
    """Resolve and copy every atlas once per (space, voxel size) among the jobs.

    Parameters
    ----------
    jobs : sequence of RunInputs
        Prepared runs.
    config : RunConfig
        The invocation's settings.

    Returns
    -------
    targets : dict
        Grid key -> atlases ready for extraction.
    failures : dict
        Grid key -> ``(atlas label, one-line reason)`` of atlases that cannot be used; the
        full message is printed once.
    """
    from bidsapp.dataset import atlas_copy
    from bidsapp.dataset.atlas import get_atlas
    from bidsapp.dataset.atlas_spec import AtlasError, parse_atlas_spec

    labels = atlas_labels(config)
    targets: dict[tuple, list[AtlasTarget]] = {}
    failures: dict[tuple, list[tuple[str, str]]] = {}
    for job in jobs:
        key = grid_key(job)
        if key in targets:
            continue
        targets[key], failures[key] = [], []
        for spec, label in zip(config.atlases, labels, strict=True):
            local = parse_atlas_spec(spec).path is not None
            try:
                atlas = get_atlas(
                    spec,
                    space=job.space,
                    voxel_size_mm=job.voxel_size_mm,
                    lut_path=config.atlas_lut if local else None,
                    atlas_space=config.atlas_space if local else None,
                )
                copied = atlas_copy.copy_atlas(config.output_dir, atlas, overwrite=config.overwrite)
            except (AtlasError, OSError, ValueError) as err:
                progress.error(f"bidsapp: atlas error: {err}")
                failures[key].append((label, _atlas_reason(spec, job.space, err)))
                continue
            targets[key].append(AtlasTarget(atlas, tuple(copied.node_files), _digest(atlas)))
    return targets, failures
