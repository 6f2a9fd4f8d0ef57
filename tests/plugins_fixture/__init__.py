"""Plugins for the end-to-end tests of the plugin contract (``tests/plugins``).

Importable by a gateway process started from the repository root (``tests.harness``
starts every child there), as an operator's own package would be.
"""
