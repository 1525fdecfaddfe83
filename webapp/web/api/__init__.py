"""The JSON API described: `/openapi.json` built from the routes (spec) and `/docs` (docs)."""

from __future__ import annotations

from webapp.web.api.docs import routes

__all__ = ["routes"]
