"""A FastAPI app answering a constant JSON body: the floor any Python HTTP server stands on.

Run as ``python -m benchmarks.trivial_endpoint PORT``, under uvicorn configured as ``kubellm
serve`` configures it, so the cache comparison sets two servers side by side.
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from fastapi import FastAPI

__all__ = ["create_app"]


def create_app() -> FastAPI:
    """The app: ``POST /v1/completions`` returns a constant, ``GET /ready`` says ok."""
    app = FastAPI()

    @app.post("/v1/completions")
    async def constant() -> dict[str, str]:
        return {"text": "cached"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> int:
    """Serve on the port given as the only argument."""
    logging.basicConfig(level=logging.WARNING)  # as the server under test runs in the benchmark
    uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
