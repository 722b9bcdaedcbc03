"""Report of a fitted labels masker, like nilearn's ``masker.generate_report()``.

What the masker keeps at ``fit`` when ``reports=True`` (``_reporting_data``: the labels
image, the mask, a representative volume of the fitted image and a region size table) is
drawn as the atlas outlines over that volume with the mask outline, followed by the region
table and the masker's parameters. A masker fitted with ``reports=False``, or not fitted,
gives an empty report with a warning saying why, as nilearn does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from bidsapp.report import html as H
from bidsapp.report.contours import plot_atlas_contours

__all__ = ["generate_masker_report"]

_NOT_ENABLED = "Report generation not enabled! No visual outputs created."
_NOT_FITTED = "This report was not generated. Make sure to run `fit` before inspecting reports."


def _parameters_table(masker: Any) -> str:
    try:
        params = masker.get_params(deep=False)
    except Exception:  # an estimator without get_params: show nothing rather than fail
        return ""
    rows = []
    for name in sorted(params):
        text = repr(params[name])
        rows.append([name, text if len(text) <= 120 else text[:117] + "..."])
    return H.table(["parameter", "value"], rows)


def _description(masker: Any) -> str:
    doc = (type(masker).__doc__ or "").strip()
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _empty(masker: Any, messages: list[str]) -> H.HTMLReport:
    name = type(masker).__name__
    body = (
        f"<h1>{H.esc(name)}: empty report</h1>"
        + H.alert(messages, "warning")
        + H.section("Parameters", _parameters_table(masker), level=2)
    )
    return H.HTMLReport(f"{name} report", body, warnings=messages)


def _figure_arrays(data: dict[str, Any], lut: Any) -> str:
    import nibabel as nib

    from bidsapp.image import resample_to_img, same_fov

    labels_img = data["labels_image"]
    mask_img = data.get("mask")
    background = data.get("img")
    if background is not None:
        background = nib.Nifti1Image(
            np.asarray(background.dataobj, dtype=np.float32), background.affine
        )
        if not same_fov(background, labels_img):
            background = resample_to_img(background, labels_img, interpolation="continuous")
    if mask_img is not None and not same_fov(mask_img, labels_img):
        mask_img = resample_to_img(mask_img, labels_img, interpolation="nearest")
    labels = nib.as_closest_canonical(
        nib.Nifti1Image(np.asarray(labels_img.dataobj).astype(np.int32), labels_img.affine)
    )
    label_data = np.asarray(labels.dataobj).astype(int)
    if background is not None:
        bg = np.asarray(nib.as_closest_canonical(background).dataobj, dtype=float)
    elif mask_img is not None:
        bg = np.asarray(nib.as_closest_canonical(mask_img).dataobj, dtype=float)
    else:
        bg = (label_data > 0).astype(float) * 0.5
    mask = None
    if mask_img is not None:
        mask = np.asarray(nib.as_closest_canonical(mask_img).dataobj) > 0
    colors = None
    if lut is not None and "color" in getattr(lut, "columns", ()):
        colors = {
            int(i): str(c)
            for i, c in zip(lut["index"], lut["color"], strict=False)
            if isinstance(c, str)
        }
    return plot_atlas_contours(bg, label_data, mask, labels.affine, colors=colors)


def generate_masker_report(masker: Any, reporting_data: dict | None = None) -> H.HTMLReport:
    """Build the HTML report of a fitted labels masker.

    Parameters
    ----------
    masker : NiftiLabelsMasker or MultiNiftiLabelsMasker
        A masker from :mod:`bidsapp.maskers` (or any estimator with ``reports`` and
        ``_reporting_data`` holding ``labels_image``, ``mask``, ``img``, ``dim`` and
        ``summary``).
    reporting_data : dict, optional
        Use this instead of the masker's ``_reporting_data`` (a maps masker's maps shown
        as labels).

    Returns
    -------
    HTMLReport
        Has ``save_as_html(path)``, ``_repr_html_()`` (shown inline by Jupyter) and
        ``get_iframe()``. Empty, with a warning, when the masker was fitted with
        ``reports=False`` or is not fitted.

    Warns
    -----
    UserWarning
        When the report is empty, when no image was given to ``fit`` (the regions are then
        shown alone) and when only the first of several 4D images is shown.
    """
    messages: list[str] = []
    if getattr(masker, "reports", True) is False:
        messages.append(_NOT_ENABLED)
    data = reporting_data or getattr(masker, "_reporting_data", None)
    if not data and getattr(masker, "reports", True) is not False:
        messages.append(_NOT_FITTED)
    if messages:
        for message in messages:
            warnings.warn(message, UserWarning, stacklevel=2)
        return _empty(masker, messages)

    name = type(masker).__name__
    notes: list[str] = []
    if data.get("img") is None:
        notes.append(
            f"No image provided to fit in {name}: the regions are shown on their own (over the "
            "mask when there is one)."
        )
    elif data.get("dim") == 5:
        notes.append("A list of 4D images was provided to fit: only the first image is shown.")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    lut = getattr(masker, "lut_", None)
    figure_html = H.figure(
        _figure_arrays(data, lut),
        "Atlas regions over the fitted image",
        "Coloured outlines: the regions of the labels image (on the grid signals are extracted "
        "on); green: the mask outline; background: a volume of the image given to fit.",
        kind="masker",
    )
    summary = data.get("summary")
    n_regions = data.get("number_of_regions")
    regions_html = ""
    if summary is not None:
        rows = summary.to_numpy().tolist()
        regions_html = H.details(
            f"Regions ({n_regions if n_regions is not None else len(rows)})",
            H.table([str(c) for c in summary.columns], rows, precision=6),
        )
    body = (
        f"<h1>{H.esc(name)} report</h1>"
        f'<p class="lead">{H.esc(_description(masker))}</p>'
        + (H.alert(notes, "warning") if notes else "")
        + figure_html
        + H.section(
            "Regions",
            f"<p>{H.esc(n_regions)} region(s) extracted.</p>" + regions_html,
            level=2,
        )
        + H.section("Parameters", _parameters_table(masker), level=2)
    )
    return H.HTMLReport(f"{name} report", body, warnings=notes)
