"""Operator stages: the plugin contract (``base``) and the plugins shipped in the package."""
