"""A stand-in for the Codex CLI that speaks the ``codex exec --json`` protocol.

    codex_replay.py exec --json [--skip-git-repo-check] [--cd DIR] [--model M] [flags]
                    [resume <thread_id>]

Reads the prompt from stdin (as the Codex SDKs hand it over) and writes JSON
lines: ``thread.started``, ``turn.started``, ``item.started`` /
``item.completed`` (reasoning, command_execution, file_change,
agent_message), ``turn.completed`` with usage, or ``turn.failed`` / ``error``.
Threads are saved under $CODEX_HOME/sessions so ``resume`` works. A word in
the prompt picks the scenario:

    scenario:slow       agent messages in small steps until SIGINT (exit 130)
    scenario:malformed  mixes lines that are not JSON into the stream
    scenario:crash      dies mid-line with exit code 2
    scenario:fail       the turn fails (model error), exit code 1
    scenario:usagelimit the turn fails: the account's usage limit, exit code 1
    (default)           runs one command, edits a file, answers, reports usage
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

USAGE = {"input_tokens": 1200, "cached_input_tokens": 200, "output_tokens": 340}


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def thread_file(thread_id):
    root = Path(os.environ.get("CODEX_HOME", Path.home() / ".codex"))
    return root / "sessions" / f"{thread_id}.jsonl"


def parse(argv):
    if not argv or argv[0] != "exec":
        fail("error: this replay only implements `codex exec`", 2)
    args = argv[1:]
    options = {"resume": None, "cd": None}
    if "--json" not in args:
        fail("error: this replay only implements --json output", 2)
    while args:
        arg = args.pop(0)
        if arg in ("--cd", "-C"):
            options["cd"] = args.pop(0)
        elif arg in ("--model", "-m", "--sandbox", "-s", "-c", "--config"):
            args.pop(0)
        elif arg == "resume":
            if not args:
                fail("error: resume needs a thread id", 2)
            options["resume"] = args.pop(0)
    return options


def item(kind, item_id, **fields):
    return {"id": item_id, "type": kind, **fields}


def main():
    options = parse(sys.argv[1:])
    if options["cd"]:
        os.chdir(options["cd"])
    prompt = sys.stdin.read()
    if not prompt.strip():
        fail("No prompt provided via stdin.")
    if options["resume"]:
        thread_id = options["resume"]
        if not thread_file(thread_id).exists():
            fail(f"Error: thread/resume failed: no rollout found for thread id {thread_id}")
    else:
        thread_id = str(uuid.uuid4())
    path = thread_file(thread_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"role": "user", "text": prompt}) + "\n")

    scenario = (re.search(r"scenario:(\w+)", prompt) or [None, "default"])[1]
    emit({"type": "thread.started", "thread_id": thread_id})
    emit({"type": "turn.started"})
    if options["resume"]:
        earlier = len(path.read_text().splitlines()) - 1
        emit(
            {
                "type": "item.completed",
                "item": item(
                    "agent_message", "item_r", text=f"Resumed thread {thread_id} with {earlier} earlier messages"
                ),
            }
        )
    if scenario == "usagelimit":
        emit({"type": "turn.failed", "error": {"message": "You've hit your usage limit. Try again later."}})
        sys.exit(1)
    if scenario == "fail":
        emit({"type": "error", "message": "Reconnecting... 1/5"})
        emit({"type": "turn.failed", "error": {"message": "model overloaded, try again later"}})
        sys.exit(1)
    if scenario == "malformed":
        sys.stdout.write('not json at all\n{"type":"item.completed",\n')
        sys.stdout.flush()
    if scenario == "slow":

        def stop(signum, frame):
            emit({"type": "turn.failed", "error": {"message": "interrupted"}})
            sys.exit(130)

        signal.signal(signal.SIGINT, stop)
        for step in range(1, 600):
            emit(
                {"type": "item.completed", "item": item("agent_message", f"item_s{step}", text=f"working step {step}")}
            )
            time.sleep(0.05)
    emit({"type": "item.completed", "item": item("reasoning", "item_0", text="**Looking at the repository**")})
    command = "bash -lc ls"
    emit(
        {
            "type": "item.started",
            "item": item(
                "command_execution",
                "item_1",
                command=command,
                aggregated_output="",
                exit_code=None,
                status="in_progress",
            ),
        }
    )
    if scenario == "crash":
        sys.stdout.write('{"type":"item.completed","item":{"id":"item_1","ty')
        sys.stdout.flush()
        sys.stderr.write("thread 'main' panicked: replay crashed on purpose\n")
        os._exit(2)
    listing = subprocess.run(["ls"], capture_output=True, text=True).stdout
    emit(
        {
            "type": "item.completed",
            "item": item(
                "command_execution",
                "item_1",
                command=command,
                aggregated_output=listing,
                exit_code=0,
                status="completed",
            ),
        }
    )
    Path("CODEX_NOTES.md").write_text(prompt)
    emit(
        {
            "type": "item.completed",
            "item": item(
                "file_change", "item_2", changes=[{"path": "CODEX_NOTES.md", "kind": "add"}], status="completed"
            ),
        }
    )
    title = prompt.splitlines()[0]
    emit({"type": "item.completed", "item": item("agent_message", "item_3", text=f"Done: {title}")})
    emit({"type": "turn.completed", "usage": USAGE})
    with path.open("a") as f:
        f.write(json.dumps({"role": "assistant", "text": f"Done: {title}"}) + "\n")


if __name__ == "__main__":
    main()
