"""The demo agent: a small real program the default executor profile runs.

It stands in for a coding agent so a fresh install visibly does work: it reads
its task, inspects the workspace, writes AGENTVINE_RESULT.md and prints its
progress over a few seconds, and adds a line to NOTES.md (so every run has a
diff to show). It is a demo, not an AI.

    python -m workers_app.demo_agent --workspace DIR (--prompt TEXT | --prompt-file PATH) [--steps N]

Step length comes from AGENTVINE_DEMO_STEP_SECONDS (default 1.0). A task
line starting with ``ASK:`` makes it ask a human through ``agentvine-ask``
(on the PATH the runner gives every agent) and print the answer it got.
"""

import os
import sys

# Run as a script, this file's folder (workers_app/) comes first on sys.path,
# and its modules (selectors.py) would shadow the standard library's.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description="AgentVine demo agent")
    parser.add_argument("--workspace", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument("--prompt-file", help="read the prompt from this file (any size)")
    parser.add_argument("--steps", type=int, default=int(os.environ.get("AGENTVINE_DEMO_STEPS", "4")))
    args = parser.parse_args(argv)
    if args.prompt_file:
        args.prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    step_seconds = float(os.environ.get("AGENTVINE_DEMO_STEP_SECONDS", "1.0"))
    workspace = Path(args.workspace)
    notes = []

    def interrupted(signum, frame):
        (workspace / "AGENTVINE_PARTIAL.md").write_text("\n".join(notes) + "\n")
        print(f"demo agent: interrupted after {len(notes)} notes, partial work saved", flush=True)
        sys.exit(130)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)

    title = args.prompt.splitlines()[0] if args.prompt else "(no prompt)"
    print(f"demo agent: starting on task: {title}", flush=True)
    files = sorted(p.name for p in workspace.iterdir()) if workspace.is_dir() else []
    notes.append(f"workspace has {len(files)} entries: {', '.join(files[:20]) or 'none'}")
    print(f"demo agent: {notes[-1]}", flush=True)
    for line in args.prompt.splitlines():
        if line.startswith("ASK:"):
            question = line[len("ASK:") :].strip()
            print(f"demo agent: asking a human: {question}", flush=True)
            asked = subprocess.run(["agentvine-ask", question], capture_output=True, text=True)
            if asked.returncode != 0:
                print(f"demo agent: could not ask: {asked.stderr.strip()}", flush=True)
                return 1
            answer = asked.stdout.strip()
            notes.append(f"asked {question!r}, a human answered {answer!r}")
            print(f"demo agent: answer: {answer}", flush=True)
    for step in range(1, args.steps + 1):
        time.sleep(step_seconds)
        notes.append(f"step {step}/{args.steps}: considered {len(args.prompt.split())} words of the task")
        print(f"demo agent: {notes[-1]}", flush=True)
    result = workspace / "AGENTVINE_RESULT.md"
    result.write_text(f"# Result\n\nTask: {title}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    # A file it changes turn after turn, so even a fresh install's first
    # task has a diff to show (and a follow-up turn edits what it wrote).
    log = workspace / "NOTES.md"
    previous = log.read_text(encoding="utf-8") if log.is_file() else "# Notes of the demo agent\n\n"
    log.write_text(previous + f"- {title}: {len(notes)} notes\n", encoding="utf-8")
    print(f"demo agent: added a line to {log.name}", flush=True)
    print(f"demo agent: wrote {result.name}; done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
