"""The app layer: settings, per-run extraction, participant and group levels, scheduling.

It sits on the numerical core and the dataset layer; ``bidsapp.cli`` only parses into it.
"""
