"""The Boutiques descriptor (descriptor.json) describes the real command line.

Checks: the descriptor validates with ``bosh``; it and ``bidsapp.cli.build_parser()`` offer the
same options with the same flags, types, defaults, choices, bounds and repeatability; the
command lines Boutiques generates parse back to the values of the invocation; the exit codes
match the CLI's; and ``bosh exec launch --no-container`` runs the example invocation on a
synthetic fMRIPrep dataset and produces timeseries.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bidsapp import __version__, cli
from bidsapp.app.config import DEFAULT_ATLAS
from bidsapp.app.status import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_TERMINATED,
    EXIT_USAGE,
)

REPO = Path(__file__).resolve().parents[2]
DESCRIPTOR = REPO / "descriptor.json"
EXAMPLE_INVOCATION = REPO / "examples" / "invocation.json"
BIN = Path(sys.executable).parent

# Parser actions that are not run options: they print and exit.
NOT_RUN_OPTIONS = {"help", "version"}

# What each argparse ``type`` converter must look like in Boutiques. A new converter in
# cli.py fails test_every_type_is_mapped until it is added here.
TYPE_MAP = {
    None: {"String"},
    str: {"String"},
    Path: {"File", "String"},  # File when it must exist, String for directories to create
    cli._positive_int: {"Number"},
    cli._non_negative_float: {"Number"},
    cli._fraction: {"Number"},
    cli._dummy_scans: {"String"},
    cli._denoise_preset: {"String"},
}


def bosh_exe() -> str:
    exe = BIN / "bosh"
    assert exe.exists(), f"bosh not found next to {sys.executable}: install the test extra"
    return str(exe)


def load_descriptor() -> dict:
    return json.loads(DESCRIPTOR.read_text())


def parser_actions() -> list[argparse.Action]:
    return [a for a in cli.build_parser()._actions if a.dest not in NOT_RUN_OPTIONS]


def primary_flag(action: argparse.Action) -> str:
    """The flag the descriptor must use: the first long option of the action."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    return longs[0] if longs else action.option_strings[0]


def descriptor_input_for(action: argparse.Action, inputs: list[dict]) -> dict:
    if not action.option_strings:
        matches = [i for i in inputs if i["id"] == action.dest]
    else:
        matches = [i for i in inputs if i.get("command-line-flag") == primary_flag(action)]
    assert len(matches) == 1, f"{action.option_strings or action.dest}: {len(matches)} inputs"
    return matches[0]


def simulate(invocation: Path) -> list[str]:
    """Return the command line bosh generates for an invocation, split into words."""
    proc = subprocess.run(
        [bosh_exe(), "exec", "simulate", "-i", str(invocation), str(DESCRIPTOR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("bidsapp ")]
    assert len(lines) == 1, proc.stdout
    return shlex.split(lines[0])


# --------------------------------------------------------------------------- validity


def test_bosh_validate():
    proc = subprocess.run(
        [bosh_exe(), "validate", str(DESCRIPTOR)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK"), proc.stdout


def test_metadata():
    desc = load_descriptor()
    assert desc["schema-version"] == "0.5"
    assert desc["tool-version"] == __version__
    image = desc["container-image"]
    assert image["type"] == "docker"
    assert image["image"].endswith(f"/bidsapp:{__version__}")
    # Boutiques runs command-line in a /bin/sh script and ignores the image's ENTRYPOINT.
    assert desc["command-line"].startswith("bidsapp [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL]")
    assert {"neuroinformatics", "bids"} <= set(desc["tags"]["domain"])
    resources = desc["suggested-resources"]
    assert resources["cpu-cores"] >= 1 and resources["ram"] > 0
    assert resources["walltime-estimate"] > 0
    outputs = {o["id"]: o for o in desc["output-files"]}
    assert outputs["derivatives"]["path-template"] == "[OUTPUT_DIR]"


def test_cbrain_section_names_real_ids():
    desc = load_descriptor()
    custom = desc["custom"]
    ids = {i["id"] for i in desc["inputs"]} | {o["id"] for o in desc["output-files"]}
    assert custom["cbrain:readonly-input-files"] is True
    modules = custom["cbrain:integrator_modules"]
    for module, table in modules.items():
        assert set(table) <= ids, f"{module} names unknown ids {set(table) - ids}"
    assert set(custom.get("cbrain:ignore_outputs", [])) <= ids


def test_every_value_key_in_command_line_once():
    desc = load_descriptor()
    line = desc["command-line"]
    for inp in desc["inputs"]:
        assert line.count(inp["value-key"]) == 1, inp["id"]
    keys = re.findall(r"\[[A-Z_]+\]", line)
    assert sorted(keys) == sorted(i["value-key"] for i in desc["inputs"])


# --------------------------------------------------------------------------- parser agreement


def test_every_type_is_mapped():
    for action in parser_actions():
        assert action.type in TYPE_MAP, f"add {action.type!r} of {action.dest} to TYPE_MAP"


def test_same_options_in_descriptor_and_parser():
    inputs = load_descriptor()["inputs"]
    covered = set()
    for action in parser_actions():
        if isinstance(action, argparse.BooleanOptionalAction):
            for flag in action.option_strings:
                matches = [i for i in inputs if i.get("command-line-flag") == flag]
                assert len(matches) == 1, flag
                covered.add(matches[0]["id"])
        else:
            covered.add(descriptor_input_for(action, inputs)["id"])
    extra = {i["id"] for i in inputs} - covered
    assert not extra, f"descriptor inputs the parser does not have: {sorted(extra)}"


def test_positionals_in_order():
    parser_pos = [a.dest for a in parser_actions() if not a.option_strings]
    assert parser_pos == ["bids_dir", "output_dir", "analysis_level"]
    desc = load_descriptor()
    keys = desc["command-line"].split()[1:4]
    by_key = {i["value-key"]: i for i in desc["inputs"]}
    assert [by_key[k]["id"] for k in keys] == parser_pos
    for key in keys:
        assert by_key[key]["optional"] is False
        assert "command-line-flag" not in by_key[key]


@pytest.mark.parametrize("action", parser_actions(), ids=lambda a: a.dest)
def test_option_agrees(action: argparse.Action):
    inputs = load_descriptor()["inputs"]
    if isinstance(action, argparse.BooleanOptionalAction):
        for flag in action.option_strings:
            inp = next(i for i in inputs if i.get("command-line-flag") == flag)
            assert inp["type"] == "Flag" and "default-value" not in inp
        assert action.default is False
        return
    inp = descriptor_input_for(action, inputs)
    name = inp["id"]

    # Required positionals vs optional options.
    assert inp.get("optional", False) == bool(action.option_strings), name

    # Type.
    is_flag = action.nargs == 0
    if is_flag:
        assert inp["type"] == "Flag", name
        assert isinstance(
            action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._CountAction)
        ), name
        assert inp.get("default-value") in (None, False), name
        return
    assert inp["type"] in TYPE_MAP[action.type], f"{name}: {inp['type']} for {action.type}"

    # Repeatability: nargs '+' is a space-separated list after one flag; 'append' repeats it.
    repeat = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    assert inp.get("list", False) == repeat, name
    if isinstance(action, argparse._AppendAction):
        assert inp["list-separator"] == f" {primary_flag(action)} ", name
    elif repeat:
        assert inp.get("list-separator", " ") == " ", name

    # Defaults: the descriptor states the parser's default, or none when the parser's is None.
    if action.default is None:
        assert "default-value" not in inp, f"{name}: parser default is None"
    else:
        assert inp.get("default-value") == action.default, name
        assert action.type is None or action.type(str(action.default)) == action.default

    # Choices.
    assert inp.get("value-choices") == (list(action.choices) if action.choices else None), name

    # Numbers: bounds as the converter enforces them.
    if inp["type"] == "Number":
        integer = inp.get("integer", False)
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            action.type("0.5" if integer else "not-a-number")
        if not integer:
            assert action.type("0.25") == 0.25, name
        step = 1 if integer else 1e-6
        if "minimum" in inp:
            assert action.type(str(inp["minimum"])) == inp["minimum"], name
            with pytest.raises(argparse.ArgumentTypeError):
                action.type(str(inp["minimum"] - step))
        else:
            action.type("-1")
        if "maximum" in inp:
            assert action.type(str(inp["maximum"])) == inp["maximum"], name
            with pytest.raises(argparse.ArgumentTypeError):
                action.type(str(inp["maximum"] + step))


def test_denoise_strategy_description_lists_presets():
    inputs = {i["id"]: i for i in load_descriptor()["inputs"]}
    text = inputs["denoise_strategy"]["description"]
    for preset in cli.PRESETS:
        assert preset in text
    assert DEFAULT_ATLAS in inputs["atlas"]["description"]


def test_exit_codes_match_cli():
    epilog = dict(re.findall(r"^  (\d+)  (.+)$", cli.EPILOG, flags=re.MULTILINE))
    failures = {
        EXIT_RUN_FAILED,
        EXIT_USAGE,
        EXIT_INTERRUPTED,
        EXIT_TERMINATED,
    }
    assert set(epilog) == {str(code) for code in {EXIT_OK, *failures}}
    codes = {e["code"]: e["description"] for e in load_descriptor()["error-codes"]}
    assert set(codes) == failures  # 0 is success in Boutiques
    for code, description in codes.items():
        assert description == epilog[str(code)]


# --------------------------------------------------------------------------- round trips


FULL_INVOCATION = {
    "bids_dir": "/data/fmriprep",
    "output_dir": "/data/out dir",
    "analysis_level": "participant",
    "participant_label": ["01", "sub-02"],
    "session_label": ["1"],
    "task": ["rest", "nback"],
    "bids_filter_file": "/data/filters.json",
    "space": "MNI152NLin6Asym",
    "atlas": ["Schaefer2018:100Parcels7Networks", "/atlases/my atlas_dseg.nii.gz"],
    "atlas_lut": "/atlases/lut.tsv",
    "atlas_space": "MNI152NLin6Asym",
    "denoise_strategy": "scrubbing",
    "confounds_columns": ["trans_.*", "a_comp_cor_0[0-4]"],
    "fd_threshold": 0.3,
    "std_dvars_threshold": 2,
    "dummy_scans": "4",
    "min_time": 120.5,
    "strategy": "median",
    "standardize": "psc",
    "detrend": True,
    "low_pass": 0.08,
    "high_pass": 0.01,
    "smoothing_fwhm": 6,
    "min_coverage": 0.8,
    "connectivity": ["correlation", "precision", "tangent"],
    "fisher_z": True,
    "concatenate_runs": True,
    "n_jobs": 3,
    "work_dir": "/scratch/work",
    "bids_database_dir": "/scratch/pybids index",
    "overwrite": True,
    "no_reports": True,
    "dask_scheduler": "tcp://127.0.0.1:8786",
    "verbose": True,
}

EXPECTED_NAMESPACE = {
    "bids_dir": Path("/data/fmriprep"),
    "output_dir": Path("/data/out dir"),
    "analysis_level": "participant",
    "participant_label": ["01", "sub-02"],
    "session_label": ["1"],
    "task": ["rest", "nback"],
    "bids_filter_file": Path("/data/filters.json"),
    "space": "MNI152NLin6Asym",
    "atlas": ["Schaefer2018:100Parcels7Networks", "/atlases/my atlas_dseg.nii.gz"],
    "atlas_lut": Path("/atlases/lut.tsv"),
    "atlas_space": "MNI152NLin6Asym",
    "denoise_strategy": "scrubbing",
    "confounds_columns": ["trans_.*", "a_comp_cor_0[0-4]"],
    "fd_threshold": 0.3,
    "std_dvars_threshold": 2.0,
    "dummy_scans": 4,
    "min_time": 120.5,
    "strategy": "median",
    "standardize": "psc",
    "detrend": True,
    "low_pass": 0.08,
    "high_pass": 0.01,
    "smoothing_fwhm": 6.0,
    "min_coverage": 0.8,
    "connectivity": ["correlation", "precision", "tangent"],
    "fisher_z": True,
    "concatenate_runs": True,
    "n_jobs": 3,
    "work_dir": Path("/scratch/work"),
    "bids_database_dir": Path("/scratch/pybids index"),
    "overwrite": True,
    "reports": False,
    "dask_scheduler": "tcp://127.0.0.1:8786",
    "verbose": 1,
}


def test_full_invocation_round_trip(tmp_path):
    """Every input set: the command bosh generates parses to the same values."""
    ids = {i["id"] for i in load_descriptor()["inputs"]}
    assert ids - set(FULL_INVOCATION) == {"no_detrend"}  # excluded by --detrend
    assert set(EXPECTED_NAMESPACE) == {a.dest for a in parser_actions()}
    invocation = tmp_path / "full.json"
    invocation.write_text(json.dumps(FULL_INVOCATION))
    args = cli.build_parser().parse_args(simulate(invocation)[1:])
    assert vars(args) == EXPECTED_NAMESPACE


def test_minimal_invocation_gives_parser_defaults(tmp_path):
    invocation = tmp_path / "minimal.json"
    invocation.write_text(
        json.dumps({"bids_dir": "/in", "output_dir": "/out", "analysis_level": "group"})
    )
    args = cli.build_parser().parse_args(simulate(invocation)[1:])
    defaults = cli.build_parser().parse_args(["/in", "/out", "group"])
    assert vars(args) == vars(defaults)


def test_no_detrend_round_trip_and_exclusion(tmp_path):
    invocation = tmp_path / "nodetrend.json"
    base = {"bids_dir": "/in", "output_dir": "/out", "analysis_level": "participant"}
    invocation.write_text(json.dumps({**base, "no_detrend": True}))
    words = simulate(invocation)
    assert "--no-detrend" in words
    assert cli.build_parser().parse_args(words[1:]).detrend is False
    both = tmp_path / "both.json"
    both.write_text(json.dumps({**base, "no_detrend": True, "detrend": True}))
    proc = subprocess.run(
        [bosh_exe(), "invocation", str(DESCRIPTOR), "-i", str(both)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0


def test_example_invocation_is_valid_and_parses():
    example = json.loads(EXAMPLE_INVOCATION.read_text())
    proc = subprocess.run(
        [bosh_exe(), "invocation", str(DESCRIPTOR), "-i", str(EXAMPLE_INVOCATION)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = cli.build_parser().parse_args(simulate(EXAMPLE_INVOCATION)[1:])
    assert str(args.bids_dir) == example["bids_dir"]
    assert args.analysis_level == example["analysis_level"]
    assert args.work_dir is not None, "the example keeps caches out of HOME with --work-dir"


# --------------------------------------------------------------------------- launch


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    from bidsapp.synthetic import make_fmriprep_dataset, make_templateflow_home

    root = tmp_path_factory.mktemp("bosh-demo")
    templateflow = make_templateflow_home(root / "templateflow")
    fmriprep = make_fmriprep_dataset(
        root / "fmriprep",
        subjects=("01", "02"),
        runs=(1,),
        n_volumes=40,
        templateflow_home=templateflow,
    )
    return root, fmriprep, templateflow


@pytest.mark.slow
def test_bosh_exec_launch_on_demo(demo_inputs, tmp_path, monkeypatch):
    """``bosh exec launch --no-container`` with the example invocation's options."""
    from boutiques import bosh

    root, fmriprep, templateflow = demo_inputs
    invocation = json.loads(EXAMPLE_INVOCATION.read_text())
    invocation.update(
        bids_dir=str(fmriprep),
        output_dir=str(tmp_path / "derivatives"),
        work_dir=str(tmp_path / "work"),
    )
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(templateflow))
    monkeypatch.setenv("TEMPLATEFLOW_AUTOUPDATE", "0")
    result = bosh(
        ["exec", "launch", "--no-container", "--skip-data-collection", str(DESCRIPTOR), str(path)]
    )
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}"
    assert not result.missing_files, result.missing_files
    found = {f.boutiques_name for f in result.output_files}
    assert {"derivatives", "dataset_description"} <= found

    out = tmp_path / "derivatives"
    labels = invocation.get("participant_label") or ["01", "02"]
    series = sorted(out.glob("sub-*/func/*_timeseries.tsv"))
    assert {p.name.split("_")[0] for p in series} == {f"sub-{label}" for label in labels}
    desc_label = invocation.get("denoise_strategy", "simple")
    for tsv in series:
        assert f"_desc-{desc_label}_timeseries.tsv" in tsv.name
        table = pd.read_csv(tsv, sep="\t", na_values="n/a")
        assert table.shape[0] > 10  # retained volumes of a 40-volume run
        assert table.shape[1] == 400  # Schaefer2018 400 parcels, one column each
        covered = table.dropna(axis=1, how="all")
        assert covered.shape[1] > 200
        sidecar = json.loads(tsv.with_suffix(".json").read_text())
        assert sidecar["Denoising"]["name"] == desc_label
        assert sidecar["RepetitionTime"] == pytest.approx(2.0)
        assert len(sidecar["RetainedVolumes"]) == table.shape[0]
    # The work directory was used for caches, and nothing was written into BIDS_DIR.
    assert (tmp_path / "work").is_dir()
    assert not [p for p in fmriprep.rglob("*") if p.stat().st_mtime > path.stat().st_mtime]
