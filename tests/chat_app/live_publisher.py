"""``python -m tests.chat_app.live_publisher STOP_FILE``: publish one live event
after another through ``agentvine.events.publish`` (each in its own
transaction, like a service) until STOP_FILE exists, then print how many.

The fault tests run it as a separate process against the test database and
their own Redis, so its events reach daphne over the real layer, or not at
all while that Redis is down (the events still commit).
"""

import os
import sys
import time

import django

INTERVAL_SECONDS = 0.02


def main(stop_file):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings_test")
    django.setup()
    from django.db import transaction

    from agentvine import events

    published = 0
    while not os.path.exists(stop_file):
        with transaction.atomic():
            events.publish("test.tick", {"pid": os.getpid(), "n": published}, groups=[])
        published += 1
        time.sleep(INTERVAL_SECONDS)
    events.flush()
    print(f"published {published}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
