"""Exceptions raised by the signature core.

Two failure families matter to callers: the signed *content* is not a valid simple-signing
document (`MalformedSignature`), or the cryptographic / policy check did not pass
(`SignatureVerificationError`). Both carry a human-readable message meant to be printed
verbatim by the CLI and stored as a condition message.
"""

from __future__ import annotations


class SignatureError(Exception):
    """Base class for every error of the signatures package."""


class MalformedSignature(SignatureError):
    """The signed payload (or the stored signature wrapper) is not well-formed."""


class SignatureVerificationError(SignatureError):
    """The signature could not be verified against the trusted keys."""
