"""gunicorn configuration for this repository's examples: the installed package's
settings and drain hook (which work without this file too:
``gunicorn -c python:wsgiws.gunicorn_conf app:app``), plus the worker count
from ``WSGIWS_WORKERS``, which the examples' commands use.

    gunicorn -c gunicorn.conf.py examples.echo:app
"""

import os

from wsgiws.gunicorn_conf import *  # noqa: F403  (the settings and the drain hook)

workers = int(os.environ.get("WSGIWS_WORKERS", "1"))
