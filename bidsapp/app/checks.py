"""Checks of an invocation before any run: directories, options that need the disk, atlas labels.

Part of the app layer. Every refusal is a :class:`UsageProblem` (exit code 2) whose message
names the option and the file.
"""

from __future__ import annotations

import logging

from bidsapp.app.config import RunConfig
from bidsapp.app.status import one_line
from bidsapp.errors import BidsappError

logger = logging.getLogger(__name__)


class UsageProblem(BidsappError, ValueError):
    """The invocation cannot run at all (exit code 2): bad directories, unusable options."""


def check_directories(config: RunConfig) -> None:
    """Refuse directories that cannot work (exit code 2).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Raises
    ------
    UsageProblem
        If BIDS_DIR is not a dataset directory or OUTPUT_DIR is BIDS_DIR.
    """
    bids_dir = config.bids_dir.resolve()
    output_dir = config.output_dir.resolve()
    if not bids_dir.is_dir():
        raise UsageProblem(f"BIDS_DIR {config.bids_dir} is not a directory")
    if not (bids_dir / "dataset_description.json").is_file():
        raise UsageProblem(
            f"BIDS_DIR {config.bids_dir} has no dataset_description.json; expected an fMRIPrep "
            "derivatives dataset"
        )
    if output_dir == bids_dir:
        raise UsageProblem(
            f"OUTPUT_DIR {config.output_dir} is BIDS_DIR: outputs would mix with the inputs; "
            "choose another OUTPUT_DIR"
        )
    if bids_dir in output_dir.parents:
        logger.warning("OUTPUT_DIR %s is inside BIDS_DIR %s", output_dir, bids_dir)


def check_options(config: RunConfig) -> None:
    """Check the options that need the disk: preset file, filters, local atlases, LUT.

    A local atlas must declare its template space (a ``space-`` entity in its name, or
    ``--atlas-space``), and not a subject-specific one such as ``T1w``; see
    :func:`bidsapp.dataset.atlas.local_atlas_space`. Whether it matches each run's space is checked
    per run (ICA-AROMA runs are in ``MNI152NLin6Asym`` whatever ``--space`` says).

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.

    Raises
    ------
    UsageProblem
        With a message naming the option and the file.
    """
    from bidsapp import confounds as conf
    from bidsapp.dataset.atlas import local_atlas_space
    from bidsapp.dataset.atlas_spec import AtlasError, parse_atlas_spec
    from bidsapp.dataset.filters import load_bids_filters
    from bidsapp.dataset.input_files import QueryError

    if config.denoise.is_preset_file:
        try:
            conf.load_preset(config.denoise.name)
        except conf.ConfoundsError as err:
            raise UsageProblem(f"--denoise-strategy: {one_line(err)}") from err
    try:
        load_bids_filters(config.bids_filters)
    except QueryError as err:
        raise UsageProblem(f"--bids-filter-file: {one_line(err)}") from err
    local = []
    for spec in config.atlases:
        try:
            parsed = parse_atlas_spec(spec)
        except AtlasError as err:
            raise UsageProblem(f"--atlas: {one_line(err)}") from err
        if parsed.path is not None:
            if not parsed.path.is_file():
                raise UsageProblem(f"--atlas {spec}: no such file")
            try:
                local_atlas_space(parsed.path, config.atlas_space)
            except AtlasError as err:
                raise UsageProblem(f"--atlas: {one_line(err)}") from err
            local.append(parsed.path)
    if config.atlas_space is not None and not local:
        raise UsageProblem(
            "--atlas-space applies to local atlases (--atlas path/to/*_dseg.nii.gz); "
            "TemplateFlow atlases are taken in the space of each run"
        )
    if config.atlas_lut is not None:
        if not local:
            raise UsageProblem(
                "--atlas-lut applies to a local atlas (--atlas path/to/*_dseg.nii.gz); "
                "TemplateFlow atlases bring their own look-up table"
            )
        if not config.atlas_lut.is_file():
            raise UsageProblem(f"--atlas-lut {config.atlas_lut}: no such file")


def atlas_labels(config: RunConfig) -> list[str]:
    """Labels of the requested atlases as written before they are resolved."""
    from bidsapp.dataset.atlas_spec import atlas_label, parse_atlas_spec

    labels = []
    for spec in config.atlases:
        parsed = parse_atlas_spec(spec)
        labels.append(atlas_label(parsed.name, parsed.desc))
    return labels


def check_atlas_labels(config: RunConfig) -> None:
    """Refuse two ``--atlas`` values that would write one ``atlas-`` label (exit code 2)."""
    seen: dict[str, str] = {}
    for spec, label in zip(config.atlases, atlas_labels(config), strict=True):
        if label in seen and seen[label] != spec:
            raise UsageProblem(
                f"--atlas {seen[label]} and --atlas {spec} both write atlas-{label} outputs; "
                "bidsapp does not pick one: rename one of the files"
            )
        seen[label] = spec
