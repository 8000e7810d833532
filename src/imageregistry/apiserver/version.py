"""`GET /version`, answered like a Kubernetes 1.32 API server.

The kubectl on these machines is gcloud's dispatcher: it reads `minor` from this answer
and runs the matching kubectl binary, so the numbers must be exactly 1 and 32.
"""

from __future__ import annotations

import platform

from starlette.requests import Request
from starlette.responses import JSONResponse

VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-imageregistry",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": f"linux/{platform.machine().lower().replace('x86_64', 'amd64')}",
}


async def version(_request: Request) -> JSONResponse:
    return JSONResponse(VERSION_INFO)
