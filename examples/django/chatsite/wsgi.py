"""The WSGI application gunicorn serves: Django's, wrapped in the WebSocket middleware."""

import os

from django.core.wsgi import get_wsgi_application

from wsgiws import WebSocketMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

application = WebSocketMiddleware(get_wsgi_application())
