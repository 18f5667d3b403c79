"""wsgiws: WebSockets for WSGI apps on gevent."""
