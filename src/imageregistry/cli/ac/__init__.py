"""The `ac` client CLI."""
