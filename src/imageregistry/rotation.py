"""`image-registry rotate-secret NAME`: replace one of the secrets every replica shares.

The secrets live in the shared database (`metadata.tokens`, docs/operations.md, "Several
replicas"); a replica reads them when it starts, so a rotation takes effect on each
replica at its next start, and every replica then agrees because they all read the one
new value. What each rotation ends:

- `token-signing-key`: a new ES256 key signs tokens from now on. The old public key is
  kept as the one previous key still accepted, so tokens already issued keep working
  until they expire; `revoke_old` drops it (a leaked key), ending them all.
- `blob-link-key`: links to the blob port signed with the old key stop working (they
  live five minutes anyway).
- `serving-ca`: a new CA; each replica re-issues its serving certificate at start, and
  clients need the new `ca.crt` (every `admin.kubeconfig` is brought up to date at start).
- `admin-token`: every opaque cluster-admin token stops working at once (the shared one
  and any an older version made per replica; only the first start makes them); every
  `admin.kubeconfig` gets the new one at its replica's next start.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from imageregistry.auth.tokens import generate_signing_key
from imageregistry.blobport.links import new_link_key
from imageregistry.bootstrap import ADMIN_USER, new_admin_token
from imageregistry.metadata.db import Database
from imageregistry.metadata.tokens import (
    BLOB_LINK_KEY,
    PREVIOUS_SIGNING_KEYS,
    SERVING_CA,
    SIGNING_KEY,
    get_secret,
    set_secret,
)
from imageregistry.pki import new_ca

SECRETS = ("token-signing-key", "blob-link-key", "serving-ca", "admin-token")


def _public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def rotate(db: Database, name: str, *, revoke_old: bool = False) -> str:
    """Replace the shared secret `name` (one of `SECRETS`); returns what happens next."""
    if name == "token-signing-key":
        old = get_secret(db, SIGNING_KEY)
        previous = _public_pem(old) if old and not revoke_old else None
        set_secret(db, PREVIOUS_SIGNING_KEYS, previous)
        set_secret(db, SIGNING_KEY, generate_signing_key().decode())
        if previous:
            return (
                "new token-signing key; tokens signed with the old one are accepted until"
                " they expire"
            )
        return "new token-signing key; every token signed with the old one is refused"
    if name == "blob-link-key":
        set_secret(db, BLOB_LINK_KEY, new_link_key())
        return "new blob-link key; links signed with the old one are refused"
    if name == "serving-ca":
        set_secret(db, SERVING_CA, new_ca().to_pem())
        return (
            "new serving CA; each replica re-issues its certificate when it starts; give"
            " clients the new DATA_DIR/tls/ca.crt (admin.kubeconfig is updated at start)"
        )
    if name == "admin-token":
        new_admin_token(db, revoked_username=ADMIN_USER)
        return (
            "new cluster-admin token; the old ones are refused now; each replica writes the"
            " new one into its admin.kubeconfig when it starts"
        )
    raise ValueError(f"unknown secret {name!r}: one of {', '.join(SECRETS)}")
