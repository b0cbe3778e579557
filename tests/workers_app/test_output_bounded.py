"""An agent that prints far more than the worker could hold: memory stays bounded, nothing is lost."""

import sys
import time

from workers_app.executors import executor_for
from workers_app.executors.base import RunContext
from workers_app.executors.process import MAX_LINE_CHARS, PIPE_BUFFER_CHARS

LINES = 40_000
LINE_CHARS = 4000  # 40,000 x 4 KB = 160 MB through the pipe
FLOOD = (
    "import sys\npad = 'x' * ({width} - 15)\nfor i in range({lines}):\n    sys.stdout.write(f'{{i:012d}} {{pad}}\\n')\n"
)


def rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_flooding_agent_is_read_in_order_with_bounded_memory(run_agent, tmp_path):
    script = tmp_path / "flood.py"
    script.write_text(FLOOD.format(width=LINE_CHARS, lines=LINES))
    profile = {"type": "command", "command": [sys.executable, str(script)]}
    state = {"lines": 0, "chars": 0, "peak_buffer": 0, "peak_rss": 0, "next": 0, "in_order": True}
    baseline = rss_bytes()

    def consume(run, event):
        if event.kind != "output":
            return
        if state["lines"] == 0:
            # A slow consumer at first: the agent must block, not pile up in memory.
            time.sleep(1.0)
        state["peak_buffer"] = max(state["peak_buffer"], run.executor.process.lines.chars)
        for line in event.text.splitlines():
            state["in_order"] &= int(line[:12]) == state["next"]
            state["next"] += 1
            state["lines"] += 1
        state["peak_rss"] = max(state["peak_rss"], rss_bytes())
        event.text = ""  # keep only counts, as the runner keeps only a bounded tail

    run = run_agent(profile, "flood", on_event=consume, timeout=120)

    assert run.outcome.kind == "completed"
    assert state["lines"] == LINES and state["in_order"]
    assert state["peak_buffer"] <= PIPE_BUFFER_CHARS + MAX_LINE_CHARS
    assert state["peak_rss"] - baseline < 64 * 1024 * 1024


def test_killed_agent_frees_its_reader_even_if_nobody_reads(tmp_path):
    script = tmp_path / "flood.py"
    script.write_text(FLOOD.format(width=LINE_CHARS, lines=LINES))
    profile = {"type": "command", "command": [sys.executable, str(script)]}
    context = RunContext(
        task_id="t", work_order_id="w", prompt="flood", workspace=tmp_path, profile=profile, time_limit=30
    )
    executor = executor_for(context)
    events = executor.events()
    while next(events).kind != "output":
        pass
    time.sleep(0.5)  # the buffer fills up and the reader thread blocks on it
    reader = executor.process._readers[0]
    assert reader.is_alive()

    # What the runner does when the executor crashes: kill, and read no more.
    executor.kill()

    reader.join(timeout=5)
    assert not reader.is_alive()
    assert executor.process.wait() == -9
