"""The dataset layer: inputs, atlases, derivative names, files and status tables.

Finding inputs (pybids), atlases (TemplateFlow or local), naming and writing BIDS derivatives
and the status tables. Knows nothing of argparse, the app or reports.
"""
