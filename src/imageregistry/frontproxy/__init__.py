"""The aggregated-API front door: request-header authentication and its TLS listener."""
