"""fMRIPrep-23-shaped derivative trees of many subjects, for the scale benchmark.

Every subject holds what fMRIPrep 23.2 writes for one run with
``--output-spaces MNI152NLin2009cAsym:res-2 MNI152NLin6Asym:res-2 T1w fsaverage
--cifti-output 91k``: anatomical images in three spaces, surfaces, transforms, figures,
the run in three volumetric spaces plus CIFTI and GIFTI, boldrefs, confounds and sidecars
(107 files, and a ``sub-<label>.html`` at the root). Images are empty files (the query reads
names only); JSON sidecars are real. The first subject's ``MNI152NLin2009cAsym`` run is a real
small run written by :func:`bidsapp.synthetic.make_fmriprep_dataset`, so the command line
can process it.

Run alone to write a tree: ``python benchmarks/scale_trees.py OUT --subjects 1000``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

#: The one run of every subject.
RUN = "task-rest_run-1"
VOLUMETRIC_SPACES = ("space-T1w", "space-MNI152NLin2009cAsym_res-2", "space-MNI152NLin6Asym_res-2")
TEMPLATES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym")


def subject_label(index: int) -> str:
    """Return the label of the ``index``-th subject (from 1): ``0001``, ``0002``, ..."""
    return f"{index:04d}"


def _anat_files(sub: str) -> list[str]:
    """Names in ``sub-<label>/anat``: images, surfaces, transforms (58 files)."""
    names = [
        f"{sub}_desc-preproc_T1w.nii.gz",
        f"{sub}_desc-preproc_T1w.json",
        f"{sub}_desc-brain_mask.nii.gz",
        f"{sub}_desc-brain_mask.json",
        f"{sub}_dseg.nii.gz",
        f"{sub}_desc-aparcaseg_dseg.nii.gz",
        f"{sub}_desc-aseg_dseg.nii.gz",
        f"{sub}_desc-ribbon_mask.nii.gz",
        f"{sub}_desc-ribbon_mask.json",
    ]
    names += [f"{sub}_label-{tissue}_probseg.nii.gz" for tissue in ("GM", "WM", "CSF")]
    for template in TEMPLATES:
        space = f"{sub}_space-{template}_res-2"
        names += [
            f"{space}_desc-preproc_T1w.nii.gz",
            f"{space}_desc-preproc_T1w.json",
            f"{space}_desc-brain_mask.nii.gz",
            f"{space}_desc-brain_mask.json",
            f"{space}_dseg.nii.gz",
        ]
        names += [f"{space}_label-{tissue}_probseg.nii.gz" for tissue in ("GM", "WM", "CSF")]
        names += [
            f"{sub}_from-T1w_to-{template}_mode-image_xfm.h5",
            f"{sub}_from-{template}_to-T1w_mode-image_xfm.h5",
        ]
    names += [
        f"{sub}_from-T1w_to-fsnative_mode-image_xfm.txt",
        f"{sub}_from-fsnative_to-T1w_mode-image_xfm.txt",
    ]
    for hemi in ("L", "R"):
        names += [
            f"{sub}_hemi-{hemi}_{surface}.surf.gii"
            for surface in ("pial", "white", "midthickness", "inflated")
        ]
        names += [
            f"{sub}_hemi-{hemi}_space-fsLR_desc-reg_sphere.surf.gii",
            f"{sub}_hemi-{hemi}_desc-reg_sphere.surf.gii",
        ]
        names += [f"{sub}_hemi-{hemi}_{m}.shape.gii" for m in ("thickness", "sulc", "curv")]
    for measure in ("thickness", "sulc", "curv"):
        names += [
            f"{sub}_space-fsLR_den-91k_{measure}.dscalar.nii",
            f"{sub}_space-fsLR_den-91k_{measure}.json",
        ]
    return names


def _func_files(sub: str) -> list[str]:
    """Names in ``sub-<label>/func`` for the one run (29 files)."""
    run = f"{sub}_{RUN}"
    names = [
        f"{run}_desc-confounds_timeseries.tsv",
        f"{run}_desc-confounds_timeseries.json",
        f"{run}_desc-coreg_boldref.nii.gz",
        f"{run}_desc-coreg_boldref.json",
        f"{run}_desc-hmc_boldref.nii.gz",
        f"{run}_desc-hmc_boldref.json",
        f"{run}_from-boldref_to-T1w_mode-image_desc-coreg_xfm.txt",
        f"{run}_from-boldref_to-T1w_mode-image_desc-coreg_xfm.json",
        f"{run}_from-orig_to-boldref_mode-image_desc-hmc_xfm.txt",
        f"{run}_from-orig_to-boldref_mode-image_desc-hmc_xfm.json",
        f"{run}_space-fsLR_den-91k_bold.dtseries.nii",
        f"{run}_space-fsLR_den-91k_bold.json",
        f"{run}_hemi-L_space-fsaverage_bold.func.gii",
        f"{run}_hemi-R_space-fsaverage_bold.func.gii",
    ]
    for space in VOLUMETRIC_SPACES:
        names += [
            f"{run}_{space}_boldref.nii.gz",
            f"{run}_{space}_desc-preproc_bold.nii.gz",
            f"{run}_{space}_desc-preproc_bold.json",
            f"{run}_{space}_desc-brain_mask.nii.gz",
            f"{run}_{space}_desc-brain_mask.json",
        ]
    return names


def _figure_files(sub: str) -> list[str]:
    """Names in ``sub-<label>/figures`` (20 reportlets)."""
    anat = ("dseg", "t1w_to_MNI152NLin2009cAsym", "t1w_to_MNI152NLin6Asym", "reconall", "about")
    func = ("bbregister", "carpetplot", "compcorvar", "confoundcorr", "rois", "summary")
    names = [f"{sub}_desc-{name}_T1w.svg" for name in anat]
    names += [f"{sub}_desc-{name}_T1w.html" for name in ("summary", "conform")]
    names += [f"{sub}_{RUN}_desc-{name}_bold.svg" for name in func]
    names += [f"{sub}_{RUN}_desc-{name}_bold.html" for name in ("summary", "validation")]
    names += [f"{sub}_desc-{name}.html" for name in ("about", "summary", "errors", "boilerplate")]
    names += [f"{sub}_{RUN}_desc-sdc_bold.svg"]
    return names


def subject_files(label: str) -> dict[str, str]:
    """Map each file of one subject (relative path) to its content ('' for images).

    Parameters
    ----------
    label : str
        Subject label without ``sub-``.

    Returns
    -------
    dict of str to str
        107 files; JSON files hold what fMRIPrep writes that the query may read.
    """
    sub = f"sub-{label}"
    bold_sidecar = json.dumps(
        {"RepetitionTime": 2.0, "TaskName": "rest", "SkullStripped": False, "StartTime": 0.0}
    )
    files: dict[str, str] = {}
    for folder, names in (
        ("anat", _anat_files(sub)),
        ("func", _func_files(sub)),
        ("figures", _figure_files(sub)),
    ):
        for name in names:
            content = ""
            if name.endswith("_bold.json"):
                content = bold_sidecar
            elif name.endswith(".json"):
                content = json.dumps({"Sources": [f"bids:raw:{sub}/{folder}/{name}"]})
            files[f"{sub}/{folder}/{name}"] = content
    return files


def make_scale_tree(root: str | Path, n_subjects: int, templateflow_home: str | Path) -> Path:
    """Write (once) an fMRIPrep-23-shaped tree of ``n_subjects`` subjects.

    Parameters
    ----------
    root : str or pathlib.Path
        Folder to write; left as is when a complete tree is there already (a marker file
        records completion).
    n_subjects : int
        Number of subjects (labels ``0001`` ...).
    templateflow_home : str or pathlib.Path
        TemplateFlow home the real run's grid is read from.

    Returns
    -------
    pathlib.Path
        ``root``.
    """
    from bidsapp import synthetic

    root = Path(root)
    done = root.parent / f".{root.name}.complete"
    if done.exists():
        return root
    first = subject_label(1)
    synthetic.make_fmriprep_dataset(
        root,
        subjects=(first,),
        runs=(1,),
        n_volumes=100,
        templateflow_home=templateflow_home,
    )
    for name in ("desc-aparcaseg_dseg.tsv", "desc-aseg_dseg.tsv"):
        (root / name).write_text("index\tname\n0\tUnknown\n")
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / "CITATION.md").write_text("fMRIPrep citation boilerplate\n")
    for index in range(1, n_subjects + 1):
        label = subject_label(index)
        for folder in ("anat", "func", "figures", "log"):
            os.makedirs(root / f"sub-{label}" / folder, exist_ok=True)
        for relative, content in subject_files(label).items():
            path = root / relative
            if label == first and path.exists():
                continue  # the real run's files
            path.write_text(content)
        (root / f"sub-{label}.html").write_text("<html></html>\n")
    done.write_text("")
    return root


def main() -> None:
    """Write one tree from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--templateflow-home", type=Path, required=True)
    args = parser.parse_args()
    make_scale_tree(args.root, args.subjects, args.templateflow_home)


if __name__ == "__main__":
    main()
