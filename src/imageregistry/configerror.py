"""The one error type for a setting the server cannot run with.

Every layer raises it (or a subclass named for the setting's owner) when a setting, or
what a setting points at (a file, a bucket, a database), is unusable: `serve` catches
only this type, in one place, and prints its message as one line before any worker
starts (docs/architecture.md, "Configuration"). It has no imports, so any module may
raise it without an import cycle.
"""

from __future__ import annotations


class ConfigurationError(ValueError):
    """A setting, or what it names, is missing, unknown, malformed or unusable.

    The message is the whole diagnosis in one line, naming the setting or file."""
