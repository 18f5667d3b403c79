"""gunicorn settings for the Prometheus test: a dead worker's gauge leaves the sum."""

from wsgiws.prometheus import child_exit

__all__ = ["child_exit"]
