"""Helpers shared by several test modules (``tests/`` is on ``sys.path``: see conftest.py).

Test modules never import each other; what two of them need lives here.
"""
