"""Event notifications compatible with distribution's (docs/operations.md, "Event
notifications"): the outbox is `metadata.outbox`, events and endpoints are here."""
