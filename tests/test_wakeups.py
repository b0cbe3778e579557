"""Wake-up signals over the test Redis: what makes answers and messages reach
a waiting agent at once instead of at its next poll."""

import asyncio
import threading
import time

from agentvine import wakeups
from workers_app.executors.process import LineBuffer


def test_an_announced_answer_ends_the_wait_at_once_and_silence_times_out(redis_client):
    async def body():
        async with wakeups.QuestionSignal("q-1") as answered:
            assert await answered.wait(0.1) is False
            asyncio.get_running_loop().call_later(0.05, lambda: wakeups.question_answered_announce(question_id="q-1"))
            started = time.monotonic()
            assert await answered.wait(5) is True
            return time.monotonic() - started

    assert asyncio.run(body()) < 1


def test_a_wake_for_a_running_work_order_calls_its_runner_back_and_pokes_the_output_wait(redis_client):
    buffer = LineBuffer()
    woken = threading.Event()
    runner = wakeups.RunnerWakeups(work_order_id="wo-1", on_wake=lambda: (buffer.poke(), woken.set()))
    try:
        assert runner._listener.subscribed.wait(5)
        wakeups.work_order_wake(work_order_id="wo-1")
        started = time.monotonic()
        # What the runner's loop waits on while its agent is silent: it returns
        # on the wake, not after its timeout.
        assert buffer.take(timeout=5, limit=10) == []
        assert time.monotonic() - started < 1
        assert woken.is_set() and runner.consume_wake() and not runner.consume_wake()
    finally:
        runner.close()
