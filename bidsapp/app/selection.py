"""The runs an invocation selects: the pybids query with the settings' selection.

Part of the app layer, over :func:`bidsapp.dataset.query.find_runs`: the participant level
processes these runs, the group level checks that each has an outcome. The pybids index is
kept in ``--work-dir`` when one is given.
"""

from __future__ import annotations

from bidsapp.app.config import RunConfig


def find_selected_runs(config: RunConfig) -> list:
    """Find the runs of the invocation's selection.

    Parameters
    ----------
    config : RunConfig
        The invocation's settings: BIDS_DIR, space, participants, sessions, tasks, BIDS
        filters, ``--work-dir`` (where the pybids index of every participant is kept) and
        ``--bids-database-dir`` (a shared index of the whole dataset).

    Returns
    -------
    list of bidsapp.dataset.query.BoldRun
        The runs found.

    Raises
    ------
    bidsapp.dataset.query.NoRunsFoundError
        When no run matches.
    bidsapp.dataset.query.QueryError
        When the dataset cannot be queried.
    """
    from bidsapp.dataset.query import find_runs

    work_dir = config.work_dir
    return find_runs(
        config.bids_dir,
        space=config.space,
        participant_labels=config.participant_labels,
        session_labels=config.session_labels,
        tasks=config.tasks,
        bids_filters=config.bids_filters,
        database_dir=work_dir / "pybids_db" if work_dir else None,
        bids_database_dir=config.bids_database_dir,
    )
