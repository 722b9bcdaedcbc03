"""``logs/CITATION.md``: the methods paragraph names what computed the outputs."""

from __future__ import annotations

import multiprocessing as mp
import re
import shutil
import warnings
from importlib import metadata
from pathlib import Path

import pytest
from nilearn.interfaces import fmriprep as nilearn_fmriprep

from bidsapp import __version__, cli
from bidsapp import confounds as bc
from bidsapp.app import citation
from bidsapp.app.config import make_config
from bidsapp.dataset import tsvio

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

NILEARN_DATA = Path(nilearn_fmriprep.__file__).parent / "data"


def _named(text: str) -> set[str]:
    return set(re.findall(r"`([A-Za-z0-9_]+)`", text))


@pytest.mark.parametrize("preset", ["24P", "36P", "simple+gsr", "scrubbing.5", "acompcor"])
def test_fixed_columns_are_those_the_preset_selects(preset, tmp_path):
    """Every named column is selected from a real fMRIPrep file, and every selected one that
    is not a cosine or CompCor component (the file decides those) is named."""
    stem = "sub-01_task-rest_desc-confounds_timeseries"
    for suffix in (".tsv", ".json"):
        source = NILEARN_DATA / f"test-v21_desc-confounds_timeseries{suffix}"
        shutil.copy(source, tmp_path / f"{stem}{suffix}")
    image = tmp_path / "sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    image.touch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, _ = bc.load_confounds_strategy(str(image), preset)
    lines = citation.preset_columns(bc.load_preset(preset)["parameters"])
    named = _named("\n".join(lines))
    selected = set(confounds.columns)
    fixed = {c for c in selected if not c.startswith("cosine") and "comp_cor" not in c}
    assert fixed == named
    assert any("cosine" in line for line in lines) == any(c.startswith("cosine") for c in selected)


def test_participant_level_writes_the_methods(capsys, tmp_path, small):
    out = tmp_path / "out"
    argv = [small, out, "participant", "--no-reports", "--denoise-strategy", "simple+gsr"]
    argv += ["--atlas", "Schaefer2018:100Parcels7Networks", "--low-pass", "0.1"]
    argv += ["--fd-threshold", "0.5"]
    assert cli.main([str(a) for a in argv]) == 0
    capsys.readouterr()
    text = (out / "logs" / "CITATION.md").read_text()
    assert f"bidsapp {__version__}" in text
    for library in ("numpy", "nibabel", "pybids", "templateflow"):
        assert f"{library} {metadata.version(library)}" in text
    assert "volumes with framewise displacement > 0.5 mm, and kept" in text  # FD only
    assert "shorter than 5 volumes" in text and "low-pass 0.1 Hz" in text
    assert "desc-simpleGSR" in text
    assert "`Schaefer2018100Parcels7Networks`" in text and "doi:10.1093/cercor/bhx179" in text
    for key in ("Power2012", "Power2014", "Fox2005", "Ciric2017", "Satterthwaite2013", "nilearn"):
        assert f"[{key}]" in text
    assert "[Behzadi2007]" not in text  # no CompCor in this strategy
    # The fixed regressors it names are the ones the runs used.
    design = tsvio.read_tsv(next(out.glob("sub-01/func/*_run-1_*_design.tsv")))
    fixed = {c for c in design.columns if not c.startswith("cosine")}
    assert _named(text) >= fixed


def _write(output_dir: str, strategy: str, rounds: int) -> None:
    config = make_config(bids_dir=output_dir, output_dir=output_dir, denoise_strategy=strategy)
    for _ in range(rounds):
        citation.write_citation(config, [])


def test_concurrent_writers_leave_one_whole_file(tmp_path):
    expected = {}
    for strategy in ("36P", "compcor+gsr"):
        config = make_config(bids_dir=tmp_path, output_dir=tmp_path, denoise_strategy=strategy)
        expected[strategy] = citation.citation_text(config, [])
    context = mp.get_context("fork")
    workers = [context.Process(target=_write, args=(str(tmp_path), s, 20)) for s in expected]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert (tmp_path / "logs" / "CITATION.md").read_text() in expected.values()
