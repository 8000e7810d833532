"""prune package."""
