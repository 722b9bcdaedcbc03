"""One run through the app's extraction (no CLI, no writing), and the run it is given.

The ``run_and_atlas`` fixture of ``conftest.py`` builds that run: one subject, one run of
``N_VOLUMES`` volumes every ``T_R`` seconds on a 6 mm grid, in ``SPACE``, with ``ATLAS``.
"""

from __future__ import annotations

from typing import Any

from bidsapp.app.config import DenoiseConfig, ExtractionConfig
from bidsapp.app.extract import extract_run
from bidsapp.app.run_inputs import prepare_run

SPACE = "MNI152NLin2009cAsym"
ATLAS = "Schaefer2018:100Parcels7Networks"
N_VOLUMES = 40
T_R = 2.0


def extract_one_run(
    run: Any,
    atlas: Any,
    denoise: DenoiseConfig | None = None,
    extraction: ExtractionConfig | None = None,
) -> Any:
    """Prepare ``run`` and extract its signals for one atlas, as the participant level does."""
    denoise = denoise or DenoiseConfig()
    extraction = extraction or ExtractionConfig()
    return extract_run(prepare_run(run, denoise), [atlas], denoise, extraction)
