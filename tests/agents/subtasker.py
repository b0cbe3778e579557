"""Test agent (a command agent): splits its task into three subtasks through
``agentvine-subtask`` and waits for them; resumed, it prints what it was told.

Its subtasks run this same agent: a prompt starting "Part " is one of them,
and it prints a one-line summary of its part after a second.
"""

import subprocess
import sys
import time

RESUMED = "subtasks have ended"


def subtask(*args):
    done = subprocess.run(["agentvine-subtask", *args], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"agentvine-subtask {args[0]} failed: {done.stderr.strip()}", flush=True)
        sys.exit(1)
    return done.stdout.strip()


def main(prompt):
    if RESUMED in prompt:
        print(f"resumed with: {prompt}", flush=True)
        return 0
    if prompt.startswith("Part "):
        # Long enough for the parent to ask to wait before its subtasks end.
        time.sleep(1)
        print(f"summary: {prompt.splitlines()[0]} is done", flush=True)
        return 0
    first = subtask("create", "Part 1", "-d", "the parser")
    subtask("create", "Part 2", "-d", "the printer")
    subtask("create", "Part 3", "-d", "the tests", "--after", first)
    print(subtask("wait"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
