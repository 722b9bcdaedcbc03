"""The package's layers and the import rules between them (docs/ARCHITECTURE.md).

Every module of ``bidsapp`` belongs to one layer, named by its place in the tree; every
``import`` statement (at module level or inside a function: a lazy import is still a
dependency) is checked against the rules below. The checker itself is tested on a small
fake package, so a rule that silently stopped matching would be noticed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import bidsapp

PACKAGE_DIR = Path(bidsapp.__file__).resolve().parent

#: Layer of each top-level module or sub-package of bidsapp.
LAYERS = {
    # The numerical core: arrays and images in, arrays out.
    "signal": "core",
    "image": "core",
    "stream": "core",
    "blas": "core",
    "regions": "core",
    "engine": "core",
    "maskers": "core",
    "confounds": "core",
    # Finding inputs, atlases, naming and writing derivatives, status tables.
    "dataset": "dataset",
    # Settings, denoising plan, per-run extraction, participant and group levels.
    "app": "app",
    # HTML reports from what the app wrote.
    "report": "report",
    # Synthetic fMRIPrep/TemplateFlow trees for the demo and the tests.
    "synthetic": "synthetic",
    # Command-line parsing.
    "cli": "cli",
    # The exception and warning classes, which every layer raises and issues.
    "errors": "shared",
    # The package itself (version, lazy public entry points).
    "__init__": "package",
    "__main__": "package",
}

_ALL_BIDSAPP = {"core", "dataset", "app", "report", "synthetic", "cli", "package", "shared"}


@dataclass(frozen=True)
class Rule:
    """What one layer may not import."""

    layer: str
    #: bidsapp layers it may not import.
    layers: frozenset[str] = frozenset()
    #: bidsapp modules (dotted, below bidsapp) it may not import.
    modules: frozenset[str] = frozenset()
    #: third-party or standard-library top-level packages it may not import.
    packages: frozenset[str] = frozenset()
    why: str = ""


RULES = (
    Rule(
        "core",
        layers=frozenset({"dataset", "app", "cli", "synthetic"}),
        packages=frozenset({"bids", "templateflow", "argparse"}),
        why="the numerical core knows nothing of BIDS, TemplateFlow, the CLI or the app",
    ),
    Rule(
        "dataset",
        layers=frozenset({"app", "cli", "report", "synthetic"}),
        packages=frozenset({"argparse"}),
        why="the dataset layer knows nothing of argparse, reports or the app",
    ),
    Rule(
        "report",
        layers=frozenset({"app", "cli", "synthetic"}),
        modules=frozenset({"stream", "engine", "signal", "confounds", "regions", "maskers"}),
        packages=frozenset({"argparse", "bids", "templateflow"}),
        why="reports only read what the app wrote: they never recompute",
    ),
    Rule(
        "app",
        layers=frozenset({"cli"}),
        packages=frozenset({"argparse"}),
        why="the app sits on the core and the dataset layer; only the CLI parses",
    ),
    Rule(
        "synthetic",
        layers=frozenset({"app", "cli", "report"}),
        packages=frozenset({"argparse"}),
        why="synthetic datasets live apart from the commands that use them",
    ),
    Rule(
        "cli",
        layers=frozenset(_ALL_BIDSAPP - {"app", "package", "shared"}),
        why="cli.py only parses, then hands the settings to the app",
    ),
)

#: The one place each third-party package that speaks BIDS may be imported.
OWNERS = {"bids": {"dataset"}, "templateflow": {"dataset", "synthetic"}}

#: The synthetic datasets serve the ``demo`` command (and the tests), nothing else.
SYNTHETIC_USERS = {"app.demo"}


@dataclass(frozen=True)
class Import:
    """One imported name: the importing module, the imported module, its line."""

    source: str
    target: str
    line: int


def module_name(path: Path, root: Path) -> str:
    """Dotted name of ``path`` below the package folder ``root`` (``app.workflow``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path, package: str) -> list[Import]:
    """Every module ``path`` imports, relative imports resolved, ``package.`` stripped."""
    source = module_name(path, root)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = [package, *source.split(".")] if source != "__init__" else [package]
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            # ``from bidsapp import stream`` imports the module bidsapp.stream.
            names = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
        else:
            continue
        for name in names:
            if name == package or name.startswith(package + "."):
                name = name[len(package) + 1 :] or "__init__"
            else:
                name = "!" + name  # outside the package
            found.append(Import(source, name, node.lineno))
    return found


def layer_of(module: str) -> str | None:
    """Layer of a dotted module name below the package (None: not in LAYERS)."""
    return LAYERS.get(module.split(".")[0])


def violations(root: Path, package: str) -> list[str]:
    """Every import that breaks a rule, as ``file:line: what (why)``."""
    rules = {rule.layer: rule for rule in RULES}
    problems: dict[tuple[str, str], str] = {}  # one line per statement and imported module
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        layer = layer_of(source)
        if layer is None:
            problems[(str(path), "")] = f"{path}: module {source!r} belongs to no layer"
            continue
        rule = rules.get(layer)
        for found in imports_of(path, root, package):
            where = f"{path.relative_to(root.parent)}:{found.line}"
            if found.target.startswith("!"):
                top = found.target[1:].split(".")[0]
                if rule and top in rule.packages:
                    problems[(where, top)] = f"{where}: {layer} imports {top} ({rule.why})"
                elif top in OWNERS and layer not in OWNERS[top]:
                    owners = sorted(OWNERS[top])
                    problems[(where, top)] = f"{where}: {top} is imported only by {owners}"
                continue
            target_layer = layer_of(found.target)
            if target_layer is None:
                continue  # a name imported from a module (``from bidsapp import run``)
            if rule is None or target_layer == layer:
                continue
            if target_layer == "synthetic" and source not in SYNTHETIC_USERS:
                problems.setdefault(
                    (where, "synthetic"),
                    f"{where}: {source} imports {package}.{found.target} (only the demo "
                    "command uses the synthetic datasets)",
                )
                continue
            top = found.target.split(".")[0]
            if target_layer in rule.layers or top in rule.modules:
                problems.setdefault(
                    (where, top), f"{where}: {layer} imports {package}.{found.target} ({rule.why})"
                )
    return list(problems.values())


def test_every_module_is_in_a_layer_and_every_import_follows_the_rules():
    problems = violations(PACKAGE_DIR, "bidsapp")
    assert not problems, "\n".join(problems)


def test_every_module_has_its_line_in_the_architecture_document():
    document = (PACKAGE_DIR.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", document, flags=re.M))
    modules = {str(p.relative_to(PACKAGE_DIR)) for p in PACKAGE_DIR.rglob("*.py")}
    assert sorted(modules - listed) == [], "modules missing from docs/ARCHITECTURE.md"
    assert sorted(listed - modules) == [], "docs/ARCHITECTURE.md lists modules that do not exist"


def test_no_subpackage_shadows_a_standard_or_bids_package():
    shadowing = {"bids", "io", "json", "logging", "typing", "signal_", "templateflow"}
    names = {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir()}
    assert not names & shadowing


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "bidsapp"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("signal.py", "import bids\n", "core imports bids"),
        ("maskers/base.py", "def f():\n    from bidsapp.app import workflow\n", "core imports"),
        ("maskers/base.py", "from ..dataset import names\n", "core imports bidsapp.dataset"),
        ("dataset/query.py", "import argparse\n", "dataset imports argparse"),
        ("dataset/query.py", "from bidsapp.report import html\n", "dataset imports"),
        ("report/run.py", "from bidsapp import engine\n", "report imports bidsapp.engine"),
        ("report/run.py", "from ..confounds import load\n", "report imports bidsapp.confounds"),
        ("app/run.py", "import templateflow.api\n", "templateflow is imported only by"),
        ("app/run.py", "from bidsapp.synthetic import bold\n", "only the demo command uses"),
        ("cli.py", "from bidsapp.dataset import query\n", "cli imports bidsapp.dataset"),
        ("synthetic/tree.py", "from bidsapp.cli import main\n", "synthetic imports bidsapp.cli"),
        ("extras.py", "x = 1\n", "belongs to no layer"),
    ],
)
def test_the_checker_catches_each_kind_of_violation(tmp_path, name, text, expected):
    package = _fake_package(tmp_path, {"__init__.py": "", name: text})
    problems = violations(package, "bidsapp")
    assert any(expected in problem for problem in problems), problems


def test_the_checker_accepts_allowed_imports(tmp_path):
    files = {
        "__init__.py": "",
        "signal.py": "import numpy\nfrom bidsapp.errors import warn\n",
        "maskers/__init__.py": "from .base import Masker\nfrom bidsapp.report import masker\n",
        "maskers/base.py": "from .. import engine, stream\n",
        "dataset/query.py": "import bids\nfrom bidsapp import image\n",
        "app/run.py": "from bidsapp.dataset import query\nfrom bidsapp.report import run\n",
        "app/demo.py": "from bidsapp import synthetic\n",
        "report/run.py": "from bidsapp.dataset import names\n",
        "cli.py": "import argparse\nfrom bidsapp.app import run\nfrom bidsapp.errors import warn\n",
    }
    package = _fake_package(tmp_path, files)
    assert violations(package, "bidsapp") == []
