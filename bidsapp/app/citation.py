"""``logs/CITATION.md``: a methods paragraph for the invocation, with its references.

Part of the app layer. The paragraph names bidsapp's version and those of the libraries that
computed the numbers, the denoising strategy (its regressors, column by column, and the
censoring thresholds in force), the atlases and the references of each. One file per
invocation, written atomically under a lock (concurrent participant jobs each leave a whole
file, the last one's).
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bidsapp import __version__
from bidsapp.app.atlases import AtlasTarget
from bidsapp.app.config import RunConfig
from bidsapp.app.status import one_line

logger = logging.getLogger(__name__)

#: Path of the file under OUTPUT_DIR.
CITATION_PATH = Path("logs") / "CITATION.md"

REFERENCES = {
    "nilearn": "Wang H.-T. et al. (2024). Continuous evaluation of denoising strategies in "
    "resting-state fMRI connectivity using fMRIPrep and Nilearn. *PLOS Computational Biology* "
    "20(3): e1011942. doi:10.1371/journal.pcbi.1011942",
    "Ciric2017": "Ciric R. et al. (2017). Benchmarking of participant-level confound regression "
    "strategies for the control of motion artifact in studies of functional connectivity. "
    "*NeuroImage* 154, 174–187. doi:10.1016/j.neuroimage.2017.03.020",
    "Satterthwaite2013": "Satterthwaite T.D. et al. (2013). An improved framework for confound "
    "regression and filtering for control of motion artifact in the preprocessing of "
    "resting-state functional connectivity data. *NeuroImage* 64, 240–256. "
    "doi:10.1016/j.neuroimage.2012.08.052",
    "Behzadi2007": "Behzadi Y. et al. (2007). A component based noise correction method "
    "(CompCor) for BOLD and perfusion based fMRI. *NeuroImage* 37(1), 90–101. "
    "doi:10.1016/j.neuroimage.2007.04.042",
    "Power2012": "Power J.D. et al. (2012). Spurious but systematic correlations in functional "
    "connectivity MRI networks arise from subject motion. *NeuroImage* 59(3), 2142–2154. "
    "doi:10.1016/j.neuroimage.2011.10.018",
    "Power2014": "Power J.D. et al. (2014). Methods to detect, characterize, and remove motion "
    "artifact in resting state fMRI. *NeuroImage* 84, 320–341. "
    "doi:10.1016/j.neuroimage.2013.08.048",
    "Fox2005": "Fox M.D. et al. (2005). The human brain is intrinsically organized into dynamic, "
    "anticorrelated functional networks. *PNAS* 102(27), 9673–9678. "
    "doi:10.1073/pnas.0504136102",
    "Pruim2015": "Pruim R.H.R. et al. (2015). ICA-AROMA: a robust ICA-based strategy for "
    "removing motion artifacts from fMRI data. *NeuroImage* 112, 267–277. "
    "doi:10.1016/j.neuroimage.2015.02.064",
    "fMRIPrep": "Esteban O. et al. (2019). fMRIPrep: a robust preprocessing pipeline for "
    "functional MRI. *Nature Methods* 16, 111–116. doi:10.1038/s41592-018-0235-4",
    "TemplateFlow": "Ciric R. et al. (2022). TemplateFlow: FAIR-sharing of multi-scale, "
    "multi-species brain models. *Nature Methods* 19, 1568–1571. "
    "doi:10.1038/s41592-022-01681-2",
}

#: Publications of the atlases TemplateFlow distributes, by atlas name.
ATLAS_REFERENCES = {
    "Schaefer2018": "Schaefer A. et al. (2018). Local-global parcellation of the human cerebral "
    "cortex from intrinsic functional connectivity MRI. *Cerebral Cortex* 28(9), 3095–3114. "
    "doi:10.1093/cercor/bhx179",
    "DiFuMo": "Dadi K. et al. (2020). Fine-grain atlases of functional modes for fMRI analysis. "
    "*NeuroImage* 221, 117126. doi:10.1016/j.neuroimage.2020.117126",
    "Glasser": "Glasser M.F. et al. (2016). A multi-modal parcellation of human cerebral "
    "cortex. *Nature* 536, 171–178. doi:10.1038/nature18933",
}

_LIBRARIES = ("numpy", "scipy", "nibabel", "pandas", "pybids", "templateflow")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def preset_columns(parameters: dict[str, Any]) -> list[str]:
    """Describe, family by family, the columns ``load_confounds`` parameters select.

    Parameters
    ----------
    parameters : dict
        ``load_confounds`` keyword arguments with the ``strategy`` list.

    Returns
    -------
    list of str
        One line per family: exact names where they are fixed (motion, tissue and global
        signals with their expansions), a rule where the file decides (cosines, CompCor).
    """
    from bidsapp.confounds.columns import COMPCOR_GROUPS, EXPANSION_SUFFIXES

    def expanded(bases: Sequence[str], level: str) -> str:
        names = [*bases] + [f"{b}_{s}" for b in bases for s in EXPANSION_SUFFIXES[level]]
        return ", ".join(f"`{n}`" for n in names)

    strategy = parameters.get("strategy", ())
    lines = []
    if "high_pass" in strategy:
        lines.append("the discrete cosine regressors fMRIPrep wrote (`cosine*`)")
    if "motion" in strategy:
        bases = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
        lines.append("head motion: " + expanded(bases, parameters.get("motion", "full")))
    if "wm_csf" in strategy:
        level = parameters.get("wm_csf", "basic")
        lines.append("tissue signals: " + expanded(("csf", "white_matter"), level))
    if "global_signal" in strategy:
        level = parameters.get("global_signal", "basic")
        lines.append("global signal: " + expanded(("global_signal",), level))
    if "compcor" in strategy:
        variant = parameters.get("compcor", "anat_combined")
        n = parameters.get("n_compcor", "all")
        count = "every component fMRIPrep retained" if n == "all" else f"the first {n}"
        groups = ", ".join(
            f"`{prefix}_comp_cor_*`" + (f" with Mask {mask}" if mask else "")
            for prefix, mask in COMPCOR_GROUPS[variant]
        )
        lines.append(f"CompCor ({variant}): {count} of each of {groups}")
    if "ica_aroma" in strategy:
        if parameters.get("ica_aroma", "full") == "full":
            lines.append("the non-aggressively ICA-AROMA-denoised image (no AROMA regressor)")
        else:
            lines.append("the ICA-AROMA noise components (`aroma_motion_*`)")
    return lines


def _denoising(config: RunConfig) -> tuple[list[str], set[str]]:
    """Lines describing the denoising, and the keys of the references it needs."""
    from bidsapp import confounds as conf
    from bidsapp.app.confounds_selection import preset_description, thresholds_in_force

    denoise = config.denoise
    refs = {"nilearn", "Ciric2017", "Satterthwaite2013"}
    lines = [f"Denoising strategy `{denoise.name}` (label `desc-{denoise.label}`): "]
    if denoise.confounds_columns:
        lines[0] += "explicit confound columns matching " + ", ".join(
            f"`{p}`" for p in denoise.confounds_columns
        )
        parameters = None
    elif denoise.name == "none":
        lines[0] += "no confound regression."
        parameters = {"strategy": []}
    else:
        preset = conf.load_preset(denoise.name)
        lines[0] += preset_description(denoise)
        parameters = conf.apply_censoring_overrides(
            preset["parameters"],
            fd_threshold=denoise.fd_threshold,
            std_dvars_threshold=denoise.std_dvars_threshold,
        )
        lines += [f"- {line}" for line in preset_columns(parameters)]
        strategy = parameters["strategy"]
        if "compcor" in strategy:
            refs.add("Behzadi2007")
        if "ica_aroma" in strategy:
            refs.add("Pruim2015")
        if denoise.name.startswith("simple"):
            refs.add("Fox2005")
    fd, dvars = thresholds_in_force(denoise, parameters)
    if fd is None and dvars is None:
        lines.append("Censoring: non-steady-state volumes only.")
    else:
        scrub = (parameters or {}).get("scrub", conf.DEFAULT_SCRUB)
        parts = [f"framewise displacement > {fd:g} mm" if fd else ""]
        parts.append(f"standardized DVARS > {dvars:g}" if dvars else "")
        lines.append(
            "Censoring: non-steady-state volumes, volumes with "
            + " or ".join(p for p in parts if p)
            + f", and kept segments shorter than {scrub} volumes."
        )
        refs |= {"Power2012", "Power2014"}
    if denoise.dummy_scans is not None:
        lines.append(f"The first {denoise.dummy_scans} volume(s) were dropped (`--dummy-scans`).")
    return lines, refs


def citation_text(config: RunConfig, targets: Iterable[AtlasTarget]) -> str:
    """Return the Markdown of ``logs/CITATION.md`` for an invocation.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.
    targets : iterable of AtlasTarget
        The atlases resolved for the invocation's runs (one entry per atlas is enough).

    Returns
    -------
    str
        Methods paragraph, the denoising column by column, atlases and references.
    """
    extraction = config.extraction
    libraries = ", ".join(f"{name} {_version(name)}" for name in _LIBRARIES)
    atlases: dict[str, Any] = {}
    for target in targets:
        atlases.setdefault(target.atlas.label, target.atlas)
    denoising, refs = _denoising(config)
    filters = [
        f"low-pass {extraction.low_pass:g} Hz" if extraction.low_pass else "",
        f"high-pass {extraction.high_pass:g} Hz" if extraction.high_pass else "",
    ]
    filtering = " and ".join(f for f in filters if f) or "no Butterworth filter"
    text = [
        "# Methods",
        "",
        f"Parcel timeseries were extracted from fMRIPrep derivatives [fMRIPrep] with bidsapp "
        f"{__version__} (Python {platform.python_version()}; {libraries}). For each run, the "
        f"`{extraction.strategy}` of the voxels of each region was computed on every volume; "
        f"confounds were regressed out of the region signals in one step with {filtering}"
        f"{', linear detrending' if extraction.detrend else ''}, as nilearn's `signal.clean` "
        f"does [nilearn], after censored volumes were removed; the signals were then "
        f"standardized (`{extraction.standardize}`). Regions with less than "
        f"{extraction.min_coverage:.0%} of their voxels in the brain mask are written as n/a.",
        "",
        "## Denoising",
        "",
        *denoising,
        "",
        "The exact columns used for each run are in its timeseries sidecar "
        "(`ConfoundColumns`) and its `_design.tsv`; the censored volumes in its `_outliers.tsv`.",
        "",
        "## Atlases",
        "",
    ]
    for label, atlas in sorted(atlases.items()):
        desc = f" ({atlas.desc})" if atlas.desc else ""
        where = "TemplateFlow [TemplateFlow]" if atlas.source == "templateflow" else "a local file"
        reference = ATLAS_REFERENCES.get(atlas.name)
        line = f"- `{label}`: {atlas.name}{desc} in {atlas.space}, from {where}"
        line += f". {reference}" if reference else "; cite its original publication."
        text.append(line)
        if atlas.source == "templateflow":
            refs.add("TemplateFlow")
    text += ["", "## References", ""]
    text += [f"- [{key}] {REFERENCES[key]}" for key in sorted(refs | {"fMRIPrep"})]
    return "\n".join(text) + "\n"


def write_citation(config: RunConfig, targets: Iterable[AtlasTarget]) -> Path | None:
    """Write ``logs/CITATION.md`` atomically under a lock; never raises.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings.
    targets : iterable of AtlasTarget
        The atlases resolved for the invocation.

    Returns
    -------
    Path or None
        The file, or None when it could not be written (a warning says why).
    """
    from bidsapp.dataset import fileio, locking

    path = Path(config.output_dir) / CITATION_PATH
    try:
        text = citation_text(config, targets)
        with locking.locked(path):
            fileio.write_if_changed(path, text)
    except Exception as err:  # the runs' outputs stand without it
        logger.warning("%s not written: %s", path, one_line(err))
        return None
    return path
