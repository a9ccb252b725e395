"""`jointspace serve`: the HTTP face over the Python API (FastAPI + uvicorn) and its web page.

    from jointspace.serve import ServiceSettings, create_app
    app = create_app(ServiceSettings(home="./jointspace-data", collections=("stamps",)))

Routes: POST /search, POST /embed, GET /collections, GET /collections/{name},
GET /items/{collection}/{id}/image, GET /healthz, GET /metrics, the page at / and /docs.
"""

from .app import create_app, run_service
from .settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "run_service"]
