"""`dfd serve`: web page, REST API, live stream and monitoring over one FastAPI app.

    from deepfake_detection.serve import ServeSettings, create_app
    app = create_app(ServeSettings(workers=2))   # uvicorn module:app also works

Importing this package loads no model; the app's lifespan does, once, at start-up.
"""

from deepfake_detection.serve.app import create_app
from deepfake_detection.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
