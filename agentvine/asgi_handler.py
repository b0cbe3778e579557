"""Django's ASGI handler, with each request's synchronous work in one thread hop.

Every view and middleware of the platform is synchronous (the one async view,
the agents' question long-poll, is called from the chain like any other).
Django's stock handler pays twice for that on every request:

- It builds the middleware chain for async use. A sync-only middleware then
  runs in the request's thread, but the URL resolution and the view call
  below it hop back to the event loop and into the thread again.
- It gives each request a new thread-sensitive context, so a new thread is
  started for every request and another one joins it at the end.

Here the chain is built for sync use and runs, with the view, in one
``sync_to_async`` call, and request threads are kept and reused. A request
still has a thread of its own while its sync code runs, so a slow one holds
up nobody else. ``bench/web_requests.py`` compares the two: daphne's CPU per
request is about 45 % lower for an anonymous API call, 30 % for a token-
authenticated read and 20 % for a task create.
"""

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import FileResponse

# Idle request threads kept for the next requests; more are started when more
# requests run at once, and those beyond this many end when they are done.
IDLE_THREADS = 32


class _RequestThread(ThreadPoolExecutor):
    """One thread running one request's sync calls in order, knowing which are unfinished."""

    def __init__(self):
        super().__init__(max_workers=1, thread_name_prefix="agentvine-request")
        self.unfinished = set()

    def submit(self, fn, /, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        self.unfinished.add(future)
        future.add_done_callback(self.unfinished.discard)
        return future


def _retire(thread):
    # After whatever it still runs: its connections are its own (thread-local).
    thread.submit(connections.close_all)
    thread.shutdown(wait=False)


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self):
        self._idle_threads = []
        # Requests whose response is not sent yet: a graceful stop waits for
        # them (agentvine/asgi_shutdown.py).
        self.requests_in_flight = 0
        super().__init__()

    def load_middleware(self, is_async=False):
        # The sync chain: no middleware is adapted, and none hops to the loop.
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self._idle_threads.pop() if self._idle_threads else _RequestThread()
        self.requests_in_flight += 1
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            self.requests_in_flight -= 1
            # A client that went away leaves its view running on the thread:
            # the thread ends after it instead of serving the next request.
            if not thread.unfinished and len(self._idle_threads) < IDLE_THREADS:
                self._idle_threads.append(thread)
            else:
                _retire(thread)

    def retire_idle_threads(self):
        """End the idle request threads, closing their database connections."""
        while self._idle_threads:
            _retire(self._idle_threads.pop())

    async def run_get_response(self, request):
        response = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            # The ASGI server does the low-level chunking.
            response.block_size = self.chunk_size
        return response
