import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings")
# The web process pools its PostgreSQL connections (agentvine/settings.py).
os.environ.setdefault("DATABASE_POOL", "true")
# Build the Django app (and load models) before importing consumers.
django.setup(set_prefix=False)

from agentvine.asgi_handler import SyncChainASGIHandler  # noqa: E402

django_asgi_app = SyncChainASGIHandler()

from agentvine import asgi_shutdown  # noqa: E402

# SIGTERM answers the waiting requests, then stops daphne.
asgi_shutdown.install(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chat_app.routing import websocket_urlpatterns  # noqa: E402
from workers_app.pull_fast_path import PullFastPath  # noqa: E402

application = ProtocolTypeRouter(
    {
        # A pull worker's heartbeat and idle claim poll skip Django's chain (workers_app/pull_fast_path.py).
        "http": PullFastPath(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Everything loaded so far lives as long as the process. Out of the collector's
# sight, a full collection only walks what was made since: with the whole of
# Django in view it stalls every socket of this process for ~100 ms each time.
gc.freeze()
