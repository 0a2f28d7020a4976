"""`recstack serve`: a saved cascade behind an HTTP server (FastAPI + uvicorn).

config.py    ServeConfig, every setting and its default
model.py     ServingModel: a loaded, smoke-tested run with its lookups precomputed
pipeline.py  the timed, vectorised serving path (channels -> merge -> ranker -> page)
resolve.py   request validation and raw -> internal ids
batcher.py   dynamic micro-batching on one model thread
service.py   requests -> batcher -> response bodies
holder.py    the served model and its atomic hot reload
admin.py     POST /admin/reload (token from the environment) and SIGHUP
metrics.py   Prometheus metrics; demo.py the page at `/`; app.py the routes; server.py uvicorn
"""

from recstack.serve.app import create_app
from recstack.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
