"""agentvine/asgi.py's application with Django's stock ASGIHandler serving HTTP:
the comparison point of bench/web_requests.py."""

import gc

from django.core.handlers.asgi import ASGIHandler

from agentvine.asgi import application

application.application_mapping["http"] = ASGIHandler()
gc.freeze()
