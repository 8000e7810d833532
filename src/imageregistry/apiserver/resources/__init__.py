"""One small strategy module per API resource (validation, defaults, table columns)."""
