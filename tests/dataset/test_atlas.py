"""get_atlas: TemplateFlow and local atlases, resolutions, LUTs, and every error."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bidsapp.dataset.atlas import Atlas, get_atlas, local_atlas_space, region_ids, region_names
from bidsapp.dataset.atlas_checks import check_labels_image, read_lut
from bidsapp.dataset.atlas_spec import AtlasError, AtlasSpec, parse_atlas_spec
from bidsapp.dataset.atlas_templateflow import list_atlases, resolve_templateflow_home

TPL = "MNI152NLin2009cAsym"
S100 = "Schaefer2018:100Parcels7Networks"
S400 = "Schaefer2018:400Parcels7Networks"


@pytest.fixture
def no_network(monkeypatch):
    """Fail any DNS lookup or connection, recording the attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise socket.gaierror("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def _write_labels(path: Path, data: np.ndarray, affine=None) -> Path:
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _write_lut(path: Path, rows: list[tuple], columns=("index", "name")) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, sep="\t", index=False)
    return path


def _small_labels() -> np.ndarray:
    data = np.zeros((6, 6, 6), dtype=np.int16)
    data[:3] = 1
    data[3:, :3] = 2
    data[3:, 3:] = 5
    return data


# ------------------------------------------------------------- spec parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (S400, AtlasSpec("Schaefer2018", "400Parcels7Networks")),
        ("HOSPA", AtlasSpec("HOSPA", None)),
        ("HOSPA:", AtlasSpec("HOSPA", None)),
    ],
)
def test_parse_templateflow_spec(spec, expected):
    assert parse_atlas_spec(spec) == expected


def test_parse_local_spec(tmp_path):
    path = tmp_path / "tpl-X_atlas-Glasser_desc-v1_dseg.nii.gz"
    for spec in (path, str(path), "atlas-Glasser_desc-v1_dseg.nii.gz"):
        parsed = parse_atlas_spec(spec)
        assert (parsed.name, parsed.desc) == ("Glasser", "v1")
        assert parsed.path.is_absolute()
    parsed = parse_atlas_spec(str(tmp_path / "my-parcels_dseg.nii"))
    assert (parsed.name, parsed.desc) == ("myparcels", None)


@pytest.mark.parametrize("spec", ["Schaefer_2018", "Schaefer2018:400:7", ":400", "a b"])
def test_parse_rejects_bad_names(spec):
    with pytest.raises(AtlasError, match="NAME"):
        parse_atlas_spec(spec)


# ------------------------------------------------------------- TemplateFlow


def test_templateflow_atlas(templateflow_home):
    atlas = get_atlas(S100, space=TPL, voxel_size_mm=2.0, templateflow_home=templateflow_home)
    folder = templateflow_home / f"tpl-{TPL}"
    assert atlas.name == "Schaefer2018"
    assert atlas.desc == "100Parcels7Networks"
    assert atlas.label == "Schaefer2018100Parcels7Networks"
    assert atlas.space == TPL
    assert atlas.source == "templateflow"
    assert atlas.resolution == 2
    assert atlas.dseg == folder / (
        f"tpl-{TPL}_res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.nii.gz"
    )
    assert atlas.lut_path == folder / (
        f"tpl-{TPL}_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.tsv"
    )
    assert list(atlas.lut.columns) == ["index", "name", "color"]
    assert atlas.lut["index"].dtype == np.int64
    assert region_ids(atlas) == list(range(1, 101))
    assert region_names(atlas)[0] == "7Networks_LH_Vis_1"
    assert region_names(atlas)[-1].startswith("7Networks_RH_")


@pytest.mark.parametrize(
    ("voxel_size", "resolution"),
    [
        (1.0, 1),  # matching
        (2.0, 2),  # matching
        (4.0, 2),  # nearest
        (1.4, 1),  # nearest
        (1.5, 1),  # tie: the finer one
        ((2.0, 2.0, 2.5), 2),  # anisotropic
        (None, 1),  # unknown: the finest
    ],
)
def test_resolution_follows_voxel_size(templateflow_home, voxel_size, resolution):
    atlas = get_atlas(
        S100, space=TPL, voxel_size_mm=voxel_size, templateflow_home=templateflow_home
    )
    assert atlas.resolution == resolution
    assert atlas.res == f"{resolution:02d}"
    assert f"_res-{atlas.res}_" in atlas.dseg.name
    assert f"_res-0{resolution}_" in atlas.dseg.name


def test_downloaded_resolution_preferred_over_placeholder(templateflow_home, caplog, no_network):
    # res-01 of the 400-parcel atlas is a zero-byte placeholder: use res-02, and say so
    with caplog.at_level(logging.WARNING, logger="bidsapp.dataset.atlas_templateflow"):
        atlas = get_atlas(S400, space=TPL, voxel_size_mm=1.0, templateflow_home=templateflow_home)
    assert atlas.resolution == 2
    assert "not downloaded" in caplog.text
    assert no_network == []


def test_home_from_environment(templateflow_home, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(templateflow_home))
    assert resolve_templateflow_home() == templateflow_home
    assert get_atlas(S100, space=TPL, voxel_size_mm=2).dseg.is_relative_to(templateflow_home)


def test_explicit_home_wins_over_environment(templateflow_home, make_templateflow_home):
    private = make_templateflow_home(atlases=[("Schaefer2018", "200Parcels7Networks")])
    assert os.environ["TEMPLATEFLOW_HOME"] == str(templateflow_home)  # set by conftest
    atlas = get_atlas(
        "Schaefer2018:200Parcels7Networks", space=TPL, voxel_size_mm=2, templateflow_home=private
    )
    assert atlas.dseg.is_relative_to(private)
    assert len(region_ids(atlas)) == 200


def test_desc_less_lut_shared_by_variants(templateflow_home):
    atlas = get_atlas(
        "HOSPA:th25", space="MNI152NLin6Asym", voxel_size_mm=2, templateflow_home=templateflow_home
    )
    assert atlas.lut_path.name == "tpl-MNI152NLin6Asym_atlas-HOSPA_dseg.tsv"
    assert atlas.lut["index"].iloc[0] == 0  # the file's background row is kept in the LUT
    assert region_ids(atlas) == list(range(1, 22))  # ... but is not a region
    assert "Left Cerebral Cortex" in region_names(atlas)  # trailing space stripped
    assert atlas.label == "HOSPAth25"


def test_lut_path_overrides_templateflow_lut(templateflow_home, tmp_path):
    rows = [(i, f"region{i}") for i in range(1, 101)]
    custom = _write_lut(tmp_path / "custom_dseg.tsv", rows)
    atlas = get_atlas(
        S100, space=TPL, voxel_size_mm=2, lut_path=custom, templateflow_home=templateflow_home
    )
    assert atlas.lut_path == custom
    assert region_names(atlas)[:2] == ["region1", "region2"]


def test_list_atlases(templateflow_home):
    atlases = list_atlases(TPL, templateflow_home)
    assert S400 in atlases and "HOSPA:th25" in atlases and "MIAL67ThalamicNuclei" in atlases


# ------------------------------------------------------------ TemplateFlow errors


def test_unknown_atlas(templateflow_home):
    with pytest.raises(AtlasError) as error:
        get_atlas("Nope:x", space=TPL, voxel_size_mm=2, templateflow_home=templateflow_home)
    message = str(error.value)
    assert "Nope" in message and f"TEMPLATEFLOW_HOME={templateflow_home}" in message
    assert S400 in message  # lists what exists


def test_unknown_desc(templateflow_home):
    with pytest.raises(AtlasError, match="Schaefer2018:100Parcels17Networks"):
        get_atlas("Schaefer2018:7", space=TPL, templateflow_home=templateflow_home)


def test_ambiguous_variant(templateflow_home):
    with pytest.raises(AtlasError, match="HOSPA:th0, HOSPA:th25, HOSPA:th50"):
        get_atlas("HOSPA", space="MNI152NLin6Asym", templateflow_home=templateflow_home)


def test_unknown_space(templateflow_home):
    with pytest.raises(
        AtlasError, match="'MNI999' is not a TemplateFlow template.*MNI152NLin6Asym"
    ):
        get_atlas(S400, space="MNI999", templateflow_home=templateflow_home)


def test_empty_home(tmp_path):
    with pytest.raises(AtlasError, match="does not exist or is empty") as error:
        get_atlas(S400, space=TPL, templateflow_home=tmp_path / "nothing")
    assert "api.get('MNI152NLin2009cAsym'" in str(error.value)


def test_placeholder_fails_fast_offline(templateflow_home, no_network):
    spec = "Schaefer2018:200Parcels7Networks"  # only zero-byte placeholders in the home
    start = time.perf_counter()
    with pytest.raises(AtlasError) as error:
        get_atlas(spec, space=TPL, voxel_size_mm=2, templateflow_home=templateflow_home)
    assert time.perf_counter() - start < 2
    assert no_network == []
    message = str(error.value)
    assert f"TEMPLATEFLOW_HOME={templateflow_home}" in message
    assert "empty TemplateFlow placeholder" in message
    assert (
        "from templateflow import api; api.get('MNI152NLin2009cAsym', atlas='Schaefer2018', "
        "desc='200Parcels7Networks', resolution=2, suffix='dseg', extension='.nii.gz')"
    ) in message
    placeholder = (
        templateflow_home
        / f"tpl-{TPL}"
        / (f"tpl-{TPL}_res-02_atlas-Schaefer2018_desc-200Parcels7Networks_dseg.nii.gz")
    )
    assert placeholder.stat().st_size == 0


def test_allowed_download_without_network(templateflow_home, tmp_path, no_network):
    # one template only: TemplateFlow indexes the whole home before downloading
    home = tmp_path / "home"
    shutil.copytree(templateflow_home / f"tpl-{TPL}", home / f"tpl-{TPL}")
    with pytest.raises(AtlasError, match="failed") as error:
        get_atlas(
            "Schaefer2018:200Parcels7Networks",  # a zero-byte placeholder in that home
            space=TPL,
            voxel_size_mm=2,
            templateflow_home=home,
            allow_download=True,
        )
    assert no_network  # it did try, through TemplateFlow
    assert f"TEMPLATEFLOW_HOME={home}" in str(error.value)
    assert "api.get(" in str(error.value)


def test_unwritable_default_home_gives_advice(tmp_path):
    code = (
        "from bidsapp.dataset.atlas_spec import AtlasError\n"
        "from bidsapp.dataset.atlas_templateflow import templateflow_client\n"
        "try:\n    templateflow_client()\n"
        "except AtlasError as exc:\n    print('ATLASERROR', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TEMPLATEFLOW_HOME", "XDG_CACHE_HOME")}
    env["HOME"] = "/dev/null/home"  # cannot be created, even by root
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "ATLASERROR" in result.stdout, result.stderr
    assert "TEMPLATEFLOW_HOME" in result.stdout


# ------------------------------------------------------------------ local


def test_local_atlas_with_sibling_lut(tmp_path):
    dseg = _write_labels(
        tmp_path / f"space-{TPL}_res-2_atlas-Custom_desc-v1_dseg.nii.gz", _small_labels()
    )
    _write_lut(
        tmp_path / f"space-{TPL}_res-2_atlas-Custom_desc-v1_dseg.tsv",
        [(5, "five"), (1, "one"), (2, "two")],
    )
    atlas = get_atlas(dseg, space=TPL, voxel_size_mm=4)
    assert isinstance(atlas, Atlas)
    assert (atlas.name, atlas.desc, atlas.label) == ("Custom", "v1", "Customv1")
    assert (atlas.source, atlas.space, atlas.resolution) == ("local", TPL, 2)
    assert atlas.dseg == dseg
    assert region_ids(atlas) == [1, 2, 5]  # sorted by index
    assert region_names(atlas) == ["one", "two", "five"]


def test_local_atlas_with_explicit_lut(tmp_path):
    dseg = _write_labels(tmp_path / "parcels.nii", _small_labels().astype(np.float32))
    lut = _write_lut(tmp_path / "names.tsv", [(1, "a"), (2, "b"), (5, "c"), (9, "unused")])
    atlas = get_atlas(str(dseg), space=TPL, lut_path=lut, atlas_space=TPL)
    assert atlas.lut_path == lut and atlas.name == "parcels" and atlas.resolution is None
    assert region_ids(atlas) == [1, 2, 5, 9]  # LUT regions absent from the image are kept


def test_local_atlas_without_lut(tmp_path):
    dseg = _write_labels(tmp_path / "atlas-X_dseg.nii.gz", _small_labels())
    with pytest.raises(AtlasError, match="atlas-X_dseg.tsv"):
        get_atlas(dseg, space=TPL, atlas_space=TPL)


def test_local_atlas_missing_file(tmp_path):
    with pytest.raises(AtlasError, match="does not exist"):
        get_atlas(tmp_path / "atlas-X_dseg.nii.gz", space=TPL)


def test_local_atlas_in_other_space(tmp_path):
    dseg = _write_labels(tmp_path / "tpl-MNI152NLin6Asym_atlas-X_dseg.nii.gz", _small_labels())
    _write_lut(tmp_path / "tpl-MNI152NLin6Asym_atlas-X_dseg.tsv", [(1, "a"), (2, "b"), (5, "c")])
    with pytest.raises(AtlasError, match="space MNI152NLin6Asym but the BOLD data are in"):
        get_atlas(dseg, space=TPL)


def test_image_label_missing_from_lut(tmp_path):
    dseg = _write_labels(tmp_path / "atlas-X_dseg.nii.gz", _small_labels())
    _write_lut(tmp_path / "atlas-X_dseg.tsv", [(1, "a"), (2, "b")])
    with pytest.raises(AtlasError, match="1 label\\(s\\) missing from its look-up table.*: 5"):
        get_atlas(dseg, space=TPL, atlas_space=TPL)


# -------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("index\tlabel\n1\ta\n", "lacks column\\(s\\) name"),
        ("index,name\n1,a\n", "lacks column"),
        ("index\tname\n1.5\ta\n", "not non-negative integers"),
        ("index\tname\nx\ta\n", "not non-negative integers"),
        ("index\tname\n-1\ta\n", "not non-negative integers"),
        ("index\tname\n1\ta\n1\tb\n", "repeats index value\\(s\\) 1"),
        ("index\tname\n1\t\n", "no name for index"),
        ("", "missing or empty"),
    ],
)
def test_bad_lut(tmp_path, content, message):
    path = tmp_path / "bad_dseg.tsv"
    path.write_text(content)
    with pytest.raises(AtlasError, match=message) as error:
        read_lut(path)
    assert str(path) in str(error.value)


def test_lut_keeps_extra_columns_and_sorts(tmp_path):
    path = _write_lut(
        tmp_path / "x_dseg.tsv",
        [(3, "c", "#0000ff"), (1, "NA", "#ff0000")],
        ("index", "name", "color"),
    )
    lut = read_lut(path)
    assert lut["index"].tolist() == [1, 3]
    assert lut["name"].tolist() == ["NA", "c"]  # "NA" is a name, not a missing value
    assert lut["color"].tolist() == ["#ff0000", "#0000ff"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.full((4, 4, 4), 0.5, dtype=np.float32), "non-integer values"),
        (np.zeros((4, 4, 4, 2), dtype=np.int16), "3D"),
        (np.full((4, 4, 4), -1, dtype=np.int16), "negative"),
        (np.full((4, 4, 4), np.nan, dtype=np.float32), "NaN"),
    ],
)
def test_bad_labels_image(tmp_path, data, message):
    path = _write_labels(tmp_path / "bad_dseg.nii.gz", data)
    with pytest.raises(AtlasError, match=message) as error:
        check_labels_image(path)
    assert str(path) in str(error.value)


def test_unreadable_or_empty_image(tmp_path):
    garbage = tmp_path / "garbage_dseg.nii.gz"
    garbage.write_bytes(b"not a nifti at all")
    with pytest.raises(AtlasError, match="cannot be read"):
        check_labels_image(garbage)
    empty = tmp_path / "empty_dseg.nii.gz"
    empty.touch()
    with pytest.raises(AtlasError, match="missing or empty"):
        check_labels_image(empty)


def test_float_image_with_integer_values_and_singleton_volume(tmp_path):
    data = _small_labels().astype(np.float32)[..., None]
    path = _write_labels(tmp_path / "float_dseg.nii.gz", data)
    assert check_labels_image(path).tolist() == [1, 2, 5]


def test_templateflow_copy_with_broken_image(templateflow_home, tmp_path):
    # a downloaded but corrupt file is reported by name, not sent to the network
    home = tmp_path / "home"
    shutil.copytree(templateflow_home / f"tpl-{TPL}", home / f"tpl-{TPL}")
    name = f"tpl-{TPL}_res-02_atlas-Schaefer2018_desc-400Parcels7Networks_dseg.nii.gz"
    (home / f"tpl-{TPL}" / name).write_bytes(b"\x1f\x8b broken")
    with pytest.raises(AtlasError, match=name):
        get_atlas(S400, space=TPL, voxel_size_mm=2, templateflow_home=home)


# ------------------------------------------------------------ local atlas space


def _local_pair(folder: Path, stem: str) -> Path:
    dseg = _write_labels(folder / f"{stem}_dseg.nii.gz", _small_labels())
    _write_lut(folder / f"{stem}_dseg.tsv", [(1, "a"), (2, "b"), (5, "c")])
    return dseg


def test_local_atlas_without_a_declared_space_is_refused(tmp_path):
    dseg = _local_pair(tmp_path, "atlas-X")
    with pytest.raises(AtlasError, match="does not declare its template space") as error:
        get_atlas(dseg, space=TPL)
    message = str(error.value)
    assert str(dseg) in message and "space-<label>" in message and "--atlas-space" in message


def test_local_atlas_space_from_the_option(tmp_path):
    dseg = _local_pair(tmp_path, "atlas-X")
    atlas = get_atlas(dseg, space=TPL, atlas_space=TPL)
    assert atlas.space == TPL
    with pytest.raises(AtlasError, match="space MNI152NLin6Asym but the BOLD data are in"):
        get_atlas(dseg, space=TPL, atlas_space="MNI152NLin6Asym")


def test_local_atlas_name_and_option_must_agree(tmp_path):
    dseg = _local_pair(tmp_path, f"space-{TPL}_atlas-X")
    assert local_atlas_space(dseg) == TPL
    assert local_atlas_space(dseg, TPL) == TPL
    with pytest.raises(AtlasError, match="--atlas-space says MNI152NLin6Asym") as error:
        local_atlas_space(dseg, "MNI152NLin6Asym")
    assert str(dseg) in str(error.value)
    both = _local_pair(tmp_path, f"tpl-MNI152NLin6Asym_space-{TPL}_atlas-X")
    with pytest.raises(AtlasError, match="names two spaces"):
        local_atlas_space(both)


@pytest.mark.parametrize("native", ["T1w", "T2w", "boldref", "fsnative", "func", "t1w"])
def test_local_atlas_in_a_subject_specific_space_is_refused(tmp_path, native):
    named = _local_pair(tmp_path, f"space-{native}_atlas-X")
    with pytest.raises(AtlasError, match="specific to one subject") as error:
        get_atlas(named, space=native)
    assert str(named) in str(error.value)
    unnamed = _local_pair(tmp_path, "atlas-Y")
    with pytest.raises(AtlasError, match="specific to one subject"):
        get_atlas(unnamed, space=native, atlas_space=native)


def test_templateflow_atlases_ignore_atlas_space(templateflow_home):
    atlas = get_atlas(
        S100,
        space=TPL,
        voxel_size_mm=2,
        templateflow_home=templateflow_home,
        atlas_space="MNI152NLin6Asym",
    )
    assert (atlas.source, atlas.space) == ("templateflow", TPL)
