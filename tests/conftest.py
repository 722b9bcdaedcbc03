"""Shared fixtures: an offline TemplateFlow home and synthetic fMRIPrep datasets.

``TEMPLATEFLOW_HOME`` is pointed at a fresh temporary folder in ``pytest_configure``,
before any test module is collected, so whatever imports ``templateflow`` (which reads
the variable once, at import) sees the test home and never the developer's cache. The
``templateflow_home`` fixture fills that folder (once per session) with the skeleton and
a few synthetic atlases; code under test may also be given the path explicitly.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bidsapp import synthetic as demo

#: Atlases written into the session TemplateFlow home: template -> ((atlas, desc, resolutions)).
SESSION_ATLASES = {
    "MNI152NLin2009cAsym": (
        ("Schaefer2018", "400Parcels7Networks", (2,)),
        ("Schaefer2018", "100Parcels7Networks", (1, 2)),
    ),
    "MNI152NLin6Asym": (("HOSPA", "th25", (2,)),),
}

_TF_KEY = pytest.StashKey[tuple[Path, str | None]]()


def pytest_configure(config: pytest.Config) -> None:
    """Point TEMPLATEFLOW_HOME at an empty temporary folder; let children be interrupted.

    A shell starts a background job (``pytest &``) with SIGINT ignored, and children
    inherit that: the CLI run by the interruption tests would then never see their SIGINT.
    A handler (unlike an ignore) is reset to the default action in every child at exec.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    home = Path(tempfile.mkdtemp(prefix="bidsapp-templateflow-"))
    config.stash[_TF_KEY] = (home, os.environ.get("TEMPLATEFLOW_HOME"))
    os.environ["TEMPLATEFLOW_HOME"] = str(home)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Spare the oracle's forced garbage collections, and freeze what collection loaded.

    nilearn (the test oracle) calls ``gc.collect()`` before each image read, to bound its
    own peak memory; with the whole suite loaded, each call walks every live object and
    made the parity tests several times slower than their work. The tiny arrays of the
    tests need no such bound, and no number depends on it, so nilearn's module gets a
    ``gc`` whose ``collect`` does nothing. Objects alive after collection are frozen out of
    the collector's generations so pytest's own collections skip them as well.
    """
    import types

    import bids  # noqa: F401  (imported here so its objects are frozen too)
    import nilearn._utils.niimg
    import nilearn.maskers  # noqa: F401

    nilearn._utils.niimg.gc = types.SimpleNamespace(collect=lambda *args: 0)
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore TEMPLATEFLOW_HOME and delete the session home."""
    if _TF_KEY not in config.stash:
        return
    home, previous = config.stash[_TF_KEY]
    if previous is None:
        os.environ.pop("TEMPLATEFLOW_HOME", None)
    else:
        os.environ["TEMPLATEFLOW_HOME"] = previous
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _progress_lines() -> None:
    """Show the app's progress lines as the CLI does, also for tests that call the app."""
    from bidsapp import cli

    cli._attach_console()


@pytest.fixture(scope="session")
def templateflow_home(pytestconfig: pytest.Config) -> Path:
    """The session's TemplateFlow home (also ``$TEMPLATEFLOW_HOME``), with atlases.

    Real images: see ``SESSION_ATLASES`` and each template's ``res-02`` brain mask
    (plus ``res-01`` for MNI152NLin2009cAsym); everything else is the skeleton's
    zero-byte placeholders. Do not modify it: use ``make_templateflow_home`` instead.
    """
    home, _ = pytestconfig.stash[_TF_KEY]
    for template, atlases in SESSION_ATLASES.items():
        for atlas, desc, resolutions in atlases:
            demo.make_templateflow_home(
                home, atlases=[(atlas, desc)], template=template, resolutions=resolutions
            )
    return home


@pytest.fixture
def make_templateflow_home(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_templateflow_home(**kwargs)`` builds a private TemplateFlow home.

    Keyword arguments are those of :func:`bidsapp.synthetic.make_templateflow_home`;
    each call writes into a new folder under ``tmp_path``.
    """
    counter = iter(range(1_000))

    def build(**kwargs) -> Path:
        return demo.make_templateflow_home(tmp_path / f"templateflow{next(counter)}", **kwargs)

    return build


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_dataset(**kwargs)`` writes a synthetic fMRIPrep dataset.

    Keyword arguments are those of :func:`bidsapp.synthetic.make_fmriprep_dataset`;
    each call writes into a new folder under ``tmp_path`` and returns it.
    """
    counter = iter(range(1_000))

    def build(**kwargs) -> Path:
        return demo.make_fmriprep_dataset(tmp_path / f"fmriprep{next(counter)}", **kwargs)

    return build


@pytest.fixture
def small(make_dataset, templateflow_home):
    """A writable dataset of one subject with two runs (40 volumes, 6 mm voxels).

    Small enough for end-to-end runs of the participant level in a few seconds (used by
    ``test_trust_resume.py`` and ``test_red_resume.py``).
    """
    return make_dataset(
        subjects=("01",), runs=(1, 2), n_volumes=40, voxel_size_mm=6.0,
        templateflow_home=templateflow_home,
    )  # fmt: skip


@pytest.fixture(scope="session")
def fmriprep_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default synthetic fMRIPrep dataset (2 subjects x 2 runs), made read-only.

    Shared by the whole session: tests must not write into it.
    """
    root = demo.make_fmriprep_dataset(tmp_path_factory.mktemp("fmriprep") / "derivatives")
    _make_read_only(root)
    return root


@pytest.fixture
def read_only() -> Callable[[Path], None]:
    """Return a function removing write permission from a folder tree."""
    return _make_read_only


@pytest.fixture
def snapshot_tree() -> Callable[[Path], dict[str, tuple[int, int]]]:
    """Return a function mapping every path under a folder to (size, mtime_ns)."""
    return _snapshot_tree


def _make_read_only(root: Path) -> None:
    """Remove write permission from a folder tree (inputs of a BIDS-App are read-only)."""
    for path in sorted(root.rglob("*"), reverse=True) + [root]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _snapshot_tree(root: Path) -> dict[str, tuple[int, int]]:
    """Map every path under ``root`` to (size, mtime_ns), to prove nothing was written."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
    }


@pytest.fixture
def run_and_atlas(make_dataset, templateflow_home):
    """One fresh (writable) run of 40 volumes on a 6 mm grid, and the 100-parcel atlas."""
    from support.runs import ATLAS, N_VOLUMES, SPACE, T_R

    from bidsapp.dataset.atlas import get_atlas
    from bidsapp.dataset.query import find_runs

    bids = make_dataset(
        subjects=("01",), runs=(1,), n_volumes=N_VOLUMES, t_r=T_R, voxel_size_mm=6.0,
        templateflow_home=templateflow_home,
    )  # fmt: skip
    (run,) = find_runs(bids, participant_labels="01")
    return run, get_atlas(ATLAS, space=SPACE, voxel_size_mm=6.0)


@pytest.fixture(scope="session")
def pristine_participant_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Participant outputs of three subjects, built once per test process: do not modify.

    See :func:`support.participant_outputs.make_participant_outputs`. Tests that write
    into the output dataset (reports, the group level) take a copy:
    ``participant_outputs_copy``.
    """
    from support.participant_outputs import make_participant_outputs

    return make_participant_outputs(tmp_path_factory.mktemp("participant-outputs"))


@pytest.fixture(scope="module")
def participant_outputs_copy(pristine_participant_outputs, tmp_path_factory) -> dict:
    """A module's own copy of the session's participant output dataset (same inputs)."""
    original = pristine_participant_outputs["output_dir"]
    copy = tmp_path_factory.mktemp("participant-outputs-copy") / "out"
    shutil.copytree(original, copy, symlinks=True)

    def moved(value):
        if isinstance(value, Path) and value.is_relative_to(original):
            return copy / value.relative_to(original)
        if isinstance(value, str) and value.startswith(f"{original}{os.sep}"):
            return str(copy / Path(value).relative_to(original))
        if isinstance(value, list):
            return [moved(item) for item in value]
        return value

    records = [
        {key: moved(value) for key, value in record.items()}
        for record in pristine_participant_outputs["records"]
    ]
    return {**pristine_participant_outputs, "output_dir": copy, "records": records}
