"""The dataset layer: inputs, atlases, derivative names, files and status tables.

Finding inputs (pybids), atlases (TemplateFlow or local), naming and writing BIDS derivatives
and the status tables. Knows nothing of argparse, the app or reports.

Modules, from the leaves up:

- ``naming``: the entity tables, label checks, ``bids_name``, ``parse_name``, ``bids_uri``.
- ``input_files``: safe reads of the input dataset's JSON files (``QueryError``).
- ``filters``: subject/session/task labels and the ``--bids-filter-file`` query (no pybids).
- ``layout``: the pybids index of the input dataset, shared under a lock in the work dir.
- ``bold_sidecars``: BIDS inheritance of BOLD sidecars and the repetition time.
- ``query``: ``find_runs`` -> ``BoldRun`` (preprocessed BOLD, mask, confounds, TR).
- ``atlas_spec``, ``atlas_checks``, ``atlas_templateflow``, ``atlas``: an atlas request,
  the checks of its image and look-up table, TemplateFlow look-ups, ``get_atlas``.
- ``fileio``: atomic writes, no-follow reads, folders, leftover temporary files, SHA-256.
- ``jsonio``, ``tsvio``: JSON sidecars and BIDS TSV tables, written and read back.
- ``locking``: ``flock`` merges and the per-subject ``SubjectLock``.
- ``run_outputs``: one run's set of files: names, writing, resume checks, removal.
- ``dataset_description``: ``dataset_description.json`` and ``.bidsignore``.
- ``atlas_copy``: the atlas dataset copied into the outputs (``sourcedata/atlases``).
- ``status_tables``: per-subject run status tables, merged, repaired and read.
"""
