"""Immutable tags: the rules of `ImageTagPolicy` objects (`rules.py`, a pure leaf module)."""
