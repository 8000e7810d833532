"""Entity tags of registry content: kept for the modules that import them from here.

The rules live in `imageregistry.httpbits`, shared with the blob port.
"""

from __future__ import annotations

from imageregistry.httpbits import digest_etag as digest_etag
from imageregistry.httpbits import etag_matches as etag_matches
