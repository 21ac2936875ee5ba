"""The service: `godwit serve`'s REST API (FastAPI), its auth, metrics and in-process mover.

``create_app(project)`` builds the application; ``serve`` runs it under uvicorn. Request and
response bodies are the state layer's typed views, so the API, `--json` and the OpenAPI schema
describe the same objects.
"""

from godwit.service.app import ServiceSettings, create_app

__all__ = ["ServiceSettings", "create_app"]
