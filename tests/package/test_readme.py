"""README.md says what the code does.

- The option reference equals the table generated from ``bidsapp.cli.build_parser()`` (run
  ``python tests/package/test_readme.py`` to print it), and every option states its default.
- The set-up commands are there, and the test command is the one ``.ci/run`` runs.
- Every ``bidsapp``, ``docker run`` and ``apptainer run`` example parses with the real parser.
- The confound columns listed for each denoise strategy are the ones bidsapp selects.
- The exit codes are the CLI's.
- ``bidsapp demo`` (the README's first command) works offline and its output dataset passes
  the BIDS validator.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bidsapp import __version__, cli

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TABLE_MARKER = "<!-- options table: generated from bidsapp.cli.build_parser() -->"
IMAGE = f"ghcr.io/bidsapp/bidsapp:{__version__}"

DEMO_COMMAND = "pip install . && bidsapp demo /tmp/bidsapp-demo"
TEST_COMMAND = 'pip install ".[test,dev]" && python -m pytest'


def readme() -> str:
    return README.read_text()


# --------------------------------------------------------------------------- options table


def _help_text(action: argparse.Action) -> str:
    text = action.help or ""
    # Python 3.10's BooleanOptionalAction appends this to the help it is given.
    return text.removesuffix(" (default: %(default)s)")


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("*", r"\*")


def options_table() -> str:
    """The README's option reference, generated from the parser."""
    parser = cli.build_parser()
    formatter = parser._get_formatter()
    rows = ["| Option | Value | Description |", "| --- | --- | --- |"]
    for action in parser._actions:
        if action.dest == "help":
            continue
        if action.option_strings:
            names = ", ".join(f"`{s}`" for s in action.option_strings)
            value = "" if action.nargs == 0 else formatter._format_args(action, action.dest.upper())
        else:
            names = f"`{action.dest}`"
            value = formatter._format_args(action, action.dest) if action.choices else ""
        value = f"`{value}`" if value else ""
        rows.append(f"| {names} | {value} | {_cell(_help_text(action))} |")
    return "\n".join(rows) + "\n"


def test_options_table_matches_parser():
    text = readme()
    assert TABLE_MARKER in text
    after = text.split(TABLE_MARKER, 1)[1].lstrip("\n")
    table = "".join(line + "\n" for line in after.splitlines()[: len(options_table().splitlines())])
    assert table == options_table(), "run `python tests/package/test_readme.py` and paste its table"


@pytest.mark.parametrize(
    "action",
    [a for a in cli.build_parser()._actions if a.option_strings and a.nargs != 0],
    ids=lambda a: a.dest,
)
def test_every_option_states_its_default(action):
    help_text = _help_text(action)
    assert "(default: " in help_text, f"{action.option_strings[0]}: say its default"
    if action.default is not None:
        assert f"(default: {action.default})" in help_text, action.option_strings[0]


def test_boolean_options_state_their_default():
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse.BooleanOptionalAction):
            word = "on" if action.default else "off"
            assert f"(default: {word}" in _help_text(action), action.option_strings


# --------------------------------------------------------------------------- commands


def test_setup_commands():
    text = readme()
    assert DEMO_COMMAND in text
    assert TEST_COMMAND in text
    ci_run = (REPO / ".ci" / "run").read_text()
    ci_commands = [ln.strip() for ln in ci_run.splitlines() if ln.strip().startswith("pip install")]
    assert ci_commands == [TEST_COMMAND], ".ci/run must run the README's test command"
    # The demo command comes before the test command, both near the top.
    assert text.index(DEMO_COMMAND) < text.index(TEST_COMMAND) < text.index("## Options")


def shell_commands(text: str) -> list[list[str]]:
    """Commands in ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(shlex.split(line, comments=True))
    return commands


def bidsapp_invocations(text: str) -> list[list[str]]:
    """Arguments given to bidsapp directly or through the container image."""
    found = []
    for words in shell_commands(text):
        for i, word in enumerate(words):
            if word == "bidsapp" and (i == 0 or words[i - 1] in ("&&", ";", "exec")):
                found.append(words[i + 1 :])
                break
            if len(words) > 1 and words[1] in ("build", "pull", "push"):
                break
            if word.endswith((IMAGE, ".sif")):
                found.append(words[i + 1 :])
                break
    return found


def _cut_at_shell_operator(words: list[str]) -> list[str]:
    """Words up to the first shell operator; a shell variable stands for a small number."""
    args = []
    for word in words:
        if word in ("&&", "||", ";", "|", ">", "2>&1"):
            break
        args.append("1" if re.fullmatch(r"\$\{?\w+\}?", word) else word)
    return args


def test_readme_examples_parse():
    invocations = [_cut_at_shell_operator(w) for w in bidsapp_invocations(readme())]
    assert len(invocations) >= 6, invocations  # bidsapp, docker, apptainer, SLURM, ...
    parser = cli.build_parser()
    demo_parser = cli.build_demo_parser()
    seen_levels = set()
    for args in invocations:
        if args and args[0] == "demo":
            demo_parser.parse_args(args[1:])
            continue
        if args in (["--help"], ["--version"]):
            continue
        namespace = parser.parse_args(args)
        seen_levels.add(namespace.analysis_level)
    assert seen_levels == {"participant", "group"}


def test_container_examples():
    text = readme()
    assert "docker run --rm --read-only -u $(id -u):$(id -g)" in text
    assert "-e TEMPLATEFLOW_HOME=" in text and "--env TEMPLATEFLOW_HOME=" in text
    assert "--cleanenv" in text
    assert "TEMPLATEFLOW_HOME" in text
    assert "bosh exec launch" in text and "examples/invocation.json" in text
    assert "#SBATCH --array" in text and "SLURM_ARRAY_TASK_ID" in text


def test_exit_codes_in_readme():
    text = readme()
    for code, meaning in re.findall(r"^  (\d)  (.+)$", cli.EPILOG, flags=re.MULTILINE):
        assert f"| {code} | {meaning} |" in text, code


# --------------------------------------------------------------------------- strategies


def strategy_columns(text: str) -> dict[str, list[str]]:
    """``#### `name` `` headings, each with the first ```text block under it."""
    found: dict[str, list[str]] = {}
    name, block = None, None
    for line in text.splitlines():
        heading = re.match(r"#### `([A-Za-z0-9_.+]+)`", line)
        if heading:
            name, block = heading.group(1), None
        elif line.startswith("#"):
            name = None
        elif name and block is None and line == "```text":
            block = []
        elif name and block is not None:
            if line == "```":
                found[name] = block
                name, block = None, None
            else:
                block.extend(line.split())
    return found


def test_every_preset_is_documented():
    documented = strategy_columns(readme())
    assert set(documented) == set(cli.PRESETS), documented.keys()


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    from bidsapp.synthetic import make_fmriprep_dataset

    root = make_fmriprep_dataset(
        tmp_path_factory.mktemp("readme") / "fmriprep",
        subjects=("01",),
        runs=(1,),
        n_volumes=60,
        aroma=True,
    )
    func = root / "sub-01" / "func"
    return {
        "preproc": next(func.glob("*_space-MNI152NLin2009cAsym_*desc-preproc_bold.nii.gz")),
        "aroma": next(func.glob("*_desc-smoothAROMAnonaggr_bold.nii.gz")),
    }


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p for p in cli.PRESETS if p != "none"])
def test_strategy_columns_are_the_selected_ones(preset, demo_runs):
    from bidsapp.confounds import load_confounds_strategy

    documented = strategy_columns(readme())[preset]
    image = demo_runs["aroma" if preset == "ica_aroma" else "preproc"]
    confounds, _ = load_confounds_strategy(str(image), denoise_strategy=preset)
    selected = list(confounds.columns)
    for column in selected:
        assert any(fnmatch.fnmatchcase(column, p) for p in documented), (preset, column)
    for pattern in documented:
        assert any(fnmatch.fnmatchcase(c, pattern) for c in selected), (preset, pattern)


def test_none_strategy_documents_no_columns():
    assert strategy_columns(readme())["none"] == ["(none)"]


# --------------------------------------------------------------------------- the demo

# Sidecar entries the README abridges, or that depend on where the demo was written.
ABRIDGED_OR_RUN_SPECIFIC = (
    "ConfoundColumns",
    "RetainedVolumes",
    "MeanFramewiseDisplacement",
    "ParametersFingerprint",
)


@pytest.mark.slow
def test_demo_command_output_validates(tmp_path):
    """``bidsapp demo OUTDIR`` offline, then bids-validator on every dataset bidsapp wrote."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HTTP_PROXY": "http://127.0.0.1:9",  # no network: connections fail fast
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    env.pop("TEMPLATEFLOW_HOME", None)  # the demo brings its own
    outdir = tmp_path / "bidsapp-demo"
    proc = subprocess.run(
        [str(bin_dir / "bidsapp"), "demo", str(outdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # It says where the outputs and the reports are.
    derivatives = outdir / "derivatives"
    assert f"outputs in {derivatives}" in proc.stdout
    for report in ("sub-01.html", "sub-02.html", "group.html"):
        assert str(derivatives / report) in proc.stdout
        assert (derivatives / report).is_file()

    outputs = []
    for description in outdir.rglob("dataset_description.json"):
        if "sourcedata" in description.relative_to(outdir).parts:
            continue  # the atlas dataset bidsapp nests in its output
        generated = json.loads(description.read_text()).get("GeneratedBy") or [{}]
        if generated[0].get("Name") == "bidsapp":
            outputs.append(description.parent)
    assert outputs, sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*"))[:50]
    # What the README's Outputs section shows is what the demo wrote.
    text = readme()
    derivatives = outdir / "derivatives"
    assert outputs == [derivatives]
    listing = re.search(r"```text\nderivatives/\n(.*?)```", text, flags=re.DOTALL).group(1)
    folder = ""
    for line in listing.splitlines():
        name = line.split()[0]
        if line.startswith("    "):  # a file of the folder listed above it
            assert (derivatives / folder / name).is_file(), name
        else:
            folder = name
            assert (derivatives / name).exists(), name
    example = json.loads(re.search(r"```json\n(.*?)```", text, flags=re.DOTALL).group(1))
    real = json.loads(next(derivatives.glob("sub-01/func/*run-1*_timeseries.json")).read_text())
    assert set(example) == set(real)
    for key, value in example.items():
        if isinstance(value, dict):
            assert set(value) == set(real[key]), key
        elif key not in ABRIDGED_OR_RUN_SPECIFIC:
            assert value == real[key], key

    for dataset in outputs:
        assert list(dataset.glob("sub-*/**/*_timeseries.tsv")), dataset
        validator = bin_dir / "bids-validator-deno"
        assert validator.exists(), "install bids-validator-deno (test extra)"
        result = subprocess.run(
            [str(validator), "--format", "json", str(dataset)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        report = json.loads(result.stdout)
        errors = [
            f"{issue['code']} {issue.get('location', '')}"
            for issue in report["issues"]["issues"]
            if issue["severity"] == "error"
        ]
        assert errors == [], errors
        assert result.returncode == 0, result.stderr


if __name__ == "__main__":  # print the option table to paste into README.md
    print(TABLE_MARKER)
    print(options_table(), end="")
