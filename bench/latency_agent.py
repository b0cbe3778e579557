"""Agents for bench/latency.py; each appends ``<key> <time.time()>`` lines to
the file named on the last line of its prompt, the moment something reaches it.

    latency_agent.py listen   speaks Claude Code's stream-json (the claude
                              profile drives it): each follow-up user message
                              on stdin is stamped and answered with a result;
                              "stop" ends the session.
    latency_agent.py ask N    asks N questions through the ask client (the
                              API's long poll) and stamps each answer.
"""

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def result(session_id, text):
    emit(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "num_turns": 1,
            "result": text,
            "session_id": session_id,
            "total_cost_usd": 0,
            "usage": {},
        }
    )


def listen():
    session_id = "00000000-0000-4000-8000-000000000000"
    emit({"type": "system", "subtype": "init", "session_id": session_id, "model": "latency", "tools": []})
    stamps = None
    for line in sys.stdin:
        now = time.time()
        message = json.loads(line)
        if message.get("type") != "user":
            continue
        text = message["message"]["content"]
        if stamps is None:
            stamps = open(text.strip().splitlines()[-1], "a")  # the prompt: where to stamp
            stamps.write(f"ready {now}\n")
            stamps.flush()
            continue
        stamps.write(f"{text} {now}\n")
        stamps.flush()
        result(session_id, "ok")
        if text == "stop":
            result(session_id, "done")  # the prompt's own turn: input may close now


def ask(count):
    sys.path.insert(0, str(ROOT))
    from chat_app.ask_client import AgentVineClient

    path = Path(os.environ["AGENTVINE_PROMPT_FILE"]).read_text().strip().splitlines()[-1]
    client = AgentVineClient()
    with open(path, "a") as stamps:
        for n in range(count):
            answer = client.ask(f"q{n}")
            stamps.write(f"{answer} {time.time()}\n")
            stamps.flush()


if __name__ == "__main__":
    if sys.argv[1] == "listen":
        listen()
    else:
        ask(int(sys.argv[2]))
