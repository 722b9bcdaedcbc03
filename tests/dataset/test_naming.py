"""Tests for bidsapp.dataset.naming: the one entity table and the name parsers."""

from __future__ import annotations

import pytest

from bidsapp.dataset import naming


def test_input_tables_derive_from_the_entity_table():
    keys = dict(naming.ENTITY_ORDER)
    # Every entity an input BOLD may carry is written into output names (or is the space).
    assert set(naming.BOLD_ENTITIES) <= {*naming.RUN_ENTITIES, "space"}
    assert naming.BOLD_KEYS == {name: keys[name] for name in (*naming.BOLD_ENTITIES, "desc")}
    assert set(naming.GRID_ENTITIES) <= set(naming.BOLD_ENTITIES)
    assert naming.RUN_NAME_ENTITIES == tuple(
        name for name in naming.BOLD_ENTITIES if name not in naming.GRID_ENTITIES
    )


@pytest.mark.parametrize(
    "entities, suffix, extension",
    [
        ({"subject": "01", "task": "rest", "run": "1", "space": "MNI", "stat": "mean"},
         "timeseries", ".tsv"),
        ({"subject": "01", "session": "2", "task": "rest", "space": "MNI", "res": "2",
          "atlas": "X", "stat": "coverage"}, "bold", ".json"),
        ({"template": "MNI", "atlas": "X", "res": "02"}, "dseg", ".nii.gz"),
    ],
)  # fmt: skip
def test_parse_name_reads_back_what_bids_name_builds(entities, suffix, extension):
    name = naming.bids_name(entities, suffix=suffix, extension=extension)
    parsed = naming.parse_name(name)
    order = [(key, entities[name]) for name, key in naming.ENTITY_ORDER if name in entities]
    assert parsed.pairs == tuple(order)  # written in BIDS order, whatever the dict's order
    assert (parsed.suffix, parsed.extension, parsed.error) == (suffix, extension, None)


def test_parse_name_is_strict_and_loose_entities_is_not():
    strict = naming.parse_name("sub-01_bad_task-rest_bold.nii.gz")
    assert strict.pairs == (("sub", "01"), ("task", "rest")) and "'bad'" in strict.error
    assert naming.loose_entities("tpl-X_atlas-a-b_dseg.nii.gz") == {"tpl": "X", "atlas": "a-b"}
    tf = "tpl-MNI152NLin2009cAsym_res-02_atlas-Schaefer2018_desc-100Parcels7Networks_dseg.tsv"
    assert naming.loose_entities(tf) == dict(naming.parse_name(tf).pairs)


def test_name_entities_reads_what_bids_name_builds_and_stray_names_as_written():
    entities = {"subject": "01", "session": "2", "task": "rest", "processing": "x",
                "space": "MNI", "atlas": "X", "stat": "mean", "desc": "simple"}  # fmt: skip
    name = naming.bids_name(entities, suffix="timeseries", extension=".tsv")
    assert naming.name_entities(name) == entities
    parsed = naming.parse_name(name)
    assert naming.name_entities(name) == {naming.ENTITY_NAMES[k]: v for k, v in parsed.pairs}
    # Values as written, no check, last value of a repeated key; unknown keys kept; a part
    # without a dash is no entity; the stem ends at the first dot, so "atlas-X" is the suffix.
    stray = "sub-_bad_desc-a-b_foo-1_desc-c_atlas-X.v2_timeseries.tsv"
    assert naming.name_entities(stray) == {"subject": "", "desc": "c", "foo": "1"}


def test_run_tables_derive_from_the_entity_table():
    assert naming.RUN_KEY_ENTITIES == (*naming.RUN_ENTITIES, "space")
    assert naming.RUN_ACQUISITION_ENTITIES == tuple(
        name for name in naming.RUN_ENTITIES if name not in {"space", "res", "den", "cohort"}
    )
    assert naming.ENTITY_NAMES == {key: name for name, key in naming.ENTITY_ORDER}
    assert naming.BOLD_NAMES == {key: name for name, key in naming.BOLD_KEYS.items()}
