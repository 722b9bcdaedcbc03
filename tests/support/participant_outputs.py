"""A participant-level output dataset written without the app's extraction.

A synthetic fMRIPrep dataset (``bidsapp.synthetic``) with real BOLD, brain masks, confounds
and atlas images; a small numpy stand-in for the extraction (region means, motion/WM/CSF
regression, censoring); and the real writers of the dataset layer (names, sidecars, status
tables, the report data). The report and group-level tests read it, so they test those
layers apart from the extraction. Built once per test process (``conftest.py``).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd

from bidsapp import synthetic as demo
from bidsapp.app.config import DenoiseConfig
from bidsapp.app.confounds_selection import (
    _non_steady_state,
    _preset_parameters,
    preset_description,
    thresholds_in_force,
)
from bidsapp.dataset import atlas_copy, dataset_description, naming, run_outputs, status_tables
from bidsapp.image import resample_to_img
from bidsapp.report.run_data import RunReportData, report_data_path, write_report_data

SPACE = "MNI152NLin2009cAsym"


ATLAS_LABEL = "Schaefer100"


SUBJECTS = ("01", "02", "03")


RUNS = (1, 2)


STRATEGIES = ("simple", "scrubbing")


#: (subject, run, strategy) that fails at the participant level in the fixture.
FAILED = ("03", 2, "scrubbing")


#: Atlas label value removed from run-1 brain masks, so it is written as n/a.
DROPPED_LABEL = 5


def report_atlas(tf_home: Path) -> SimpleNamespace:
    folder = tf_home / f"tpl-{SPACE}"
    dseg = folder / f"tpl-{SPACE}_res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz"
    lut_path = folder / f"tpl-{SPACE}_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.tsv"
    lut = pd.read_csv(lut_path, sep="\t")
    return SimpleNamespace(label=ATLAS_LABEL, space=SPACE, dseg=dseg, lut=lut, lut_path=lut_path)


def stand_in_extraction(bold, mask, atlas, confounds, strategy):
    """Region means, confound regression, censoring, z-scoring: a small stand-in pipeline."""
    img = nib.load(bold)
    data = np.asarray(img.dataobj, dtype=float)
    labels = np.asarray(
        resample_to_img(nib.load(atlas.dseg), img, interpolation="nearest").dataobj
    ).astype(int)
    brain = np.asarray(nib.load(mask).dataobj) > 0
    n = data.shape[3]
    nss = [
        int(np.flatnonzero(confounds[c].to_numpy())[0])
        for c in confounds
        if c.startswith("non_steady_state_outlier")
    ]
    fd = confounds["framewise_displacement"].to_numpy(dtype=float)
    censored = set(nss)
    if strategy == "scrubbing":
        censored |= {int(i) for i in np.flatnonzero(np.nan_to_num(fd) > 0.5)}
    kept = [i for i in range(n) if i not in censored]
    columns = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter"]
    if strategy == "scrubbing":
        columns += [f"{c}_derivative1" for c in columns[:6]]
    design = confounds[columns].fillna(0).to_numpy()[kept]
    design = np.column_stack([design - design.mean(0), np.ones(len(kept))])
    names, series, coverage = [], [], []
    for index, name in zip(atlas.lut["index"], atlas.lut["name"], strict=True):
        region = labels == index
        cov = float((region & brain).sum() / max(region.sum(), 1))
        names.append(name)
        coverage.append(cov)
        if cov < 0.5:
            series.append(np.full(len(kept), np.nan))
            continue
        signal = data[region & brain].mean(axis=0)[kept]
        resid = signal - design @ np.linalg.lstsq(design, signal, rcond=None)[0]
        series.append((resid - resid.mean()) / resid.std(ddof=1))
    timeseries = pd.DataFrame(np.column_stack(series), columns=names)
    cov_series = pd.Series(coverage, index=names)
    return timeseries, cov_series, kept, sorted(censored), columns, fd


def make_participant_outputs(root: Path) -> dict:
    """Build an fMRIPrep dataset and participant outputs like bidsapp writes them.

    Returns a dict with ``bids_dir``, ``output_dir`` and ``records``: one entry per
    (subject, run, strategy) with its status and, when ok, the timeseries path.
    """
    tf_home = demo.make_templateflow_home(
        root / "templateflow", atlases=(("Schaefer2018", "100Parcels7Networks"),)
    )
    bids_dir = demo.make_fmriprep_dataset(
        root / "fmriprep", subjects=SUBJECTS, runs=RUNS, templateflow_home=tf_home
    )
    out = root / "out"
    dataset_description.write_dataset_description(
        out, name="bidsapp outputs", version="0.1.0", source_dir=bids_dir
    )
    atlas = report_atlas(tf_home)
    files = atlas_copy.copy_atlas(out, atlas)
    atlas_uri = naming.bids_uri(files.image, root=files.root, dataset="atlases")
    records = []
    for subject in SUBJECTS:
        rows = []
        for run in RUNS:
            func = bids_dir / f"sub-{subject}" / "func"
            prefix = f"sub-{subject}_task-rest_run-{run}"
            bold = func / f"{prefix}_space-{SPACE}_res-2_desc-preproc_bold.nii.gz"
            mask = func / f"{prefix}_space-{SPACE}_res-2_desc-brain_mask.nii.gz"
            conf_path = func / f"{prefix}_desc-confounds_timeseries.tsv"
            if run == 1:  # signal dropout: one region falls outside the brain mask
                mask_img = nib.load(mask)
                labels = np.asarray(
                    resample_to_img(nib.load(atlas.dseg), mask_img, "nearest").dataobj
                )
                keep = (np.asarray(mask_img.dataobj) > 0) & (labels != DROPPED_LABEL)
                nib.save(nib.Nifti1Image(keep.astype(np.uint8), mask_img.affine), mask)
            confounds = pd.read_csv(conf_path, sep="\t", na_values=["n/a"])
            entities = {"subject": subject, "task": "rest", "run": run, "space": SPACE}
            for strategy in STRATEGIES:
                row = {**entities, "atlas": ATLAS_LABEL, "denoise": strategy}
                if (subject, run, strategy) == FAILED:
                    reason = f"{bold.name}: only 1 volume(s) left after censoring"
                    rows.append({**row, "status": "failed", "reason": reason})
                    records.append({**row, "status": "failed", "reason": reason})
                    continue
                ts, cov, kept, censored, columns, fd = stand_in_extraction(
                    bold, mask, atlas, confounds, strategy
                )
                paths = run_outputs.output_paths(
                    out, entities, atlas=ATLAS_LABEL, strategy="mean", denoise=strategy
                )
                below = [n for n, c in cov.items() if c < 0.5]
                warn = ["no RepetitionTime in the JSON sidecar; using 2 s"] if run == 2 else []
                sidecar = {
                    "SamplingFrequency": 0.5,
                    "RepetitionTime": 2.0,
                    "Sources": [
                        naming.bids_uri(p, root=bids_dir, dataset="preprocessed")
                        for p in (bold, mask, conf_path)
                    ]
                    + [atlas_uri],
                    "Atlas": {
                        "Name": "Schaefer2018",
                        "Description": "100Parcels7Networks",
                        "Label": ATLAS_LABEL,
                        "Space": SPACE,
                        "Source": "templateflow",
                    },
                    "Extraction": {
                        "strategy": "mean",
                        "standardize": "zscore_sample",
                        "detrend": False,
                        "low_pass": None,
                        "high_pass": None,
                        "smoothing_fwhm": None,
                        "min_coverage": 0.5,
                    },
                    "Denoising": {
                        "name": strategy,
                        "label": strategy,
                        "confounds_columns": None,
                        "fd_threshold": None,
                        "std_dvars_threshold": None,
                        "dummy_scans": None,
                    },
                    "ConfoundColumns": columns,
                    "NumberOfVolumes": len(fd),
                    "RetainedVolumes": kept,
                    "CensoredVolumes": censored,
                    "MeanFramewiseDisplacement": float(np.nanmean(fd)),
                    "RegionsBelowCoverage": below,
                    "Warnings": warn,
                    "SoftwareName": "bidsapp",
                    "SoftwareVersion": "0.1.0",
                }
                corr = ts.corr()  # NaN rows/columns for regions set to n/a
                written = run_outputs.write_run_outputs(
                    paths,
                    timeseries=ts,
                    timeseries_sidecar=sidecar,
                    coverage=cov,
                    coverage_sidecar={"Description": "coverage"},
                    relmat=corr,
                    relmat_sidecar={**run_outputs.relmat_metadata(), "NodeFiles": files.node_files},
                )
                # What the app records for the report from its one pass (logs/report/).
                denoise = DenoiseConfig(name=strategy)
                thresholds = thresholds_in_force(denoise, _preset_parameters(denoise))
                data = RunReportData(
                    non_steady_state=_non_steady_state(confounds, None),
                    fd=fd,
                    fd_threshold=thresholds[0],
                    std_dvars_threshold=thresholds[1],
                    preset_description=preset_description(denoise),
                    mean=np.asarray(nib.load(bold).dataobj, dtype=float).mean(axis=3),
                    affine=nib.load(bold).affine,
                )
                write_report_data(report_data_path(out, paths.timeseries), data, out)
                status = {
                    "status": "ok",
                    "reason": "; ".join(warn),
                    "n_volumes": len(fd),
                    "n_volumes_kept": len(kept),
                    "mean_fd": float(np.nanmean(fd)),
                    "n_regions_low_coverage": len(below),
                    "outputs": [str(p) for p in written],
                }
                rows.append({**row, **status})
                records.append({**row, **status, "timeseries": paths.timeseries})
        status_tables.write_subject_status(out, subject, rows)
    return {"bids_dir": bids_dir, "output_dir": out, "records": records, "tf_home": tf_home}
