"""A command-profile agent that works on REVISIONS.md in its workspace (its
working directory): each turn appends one line naming the turn's prompt's
last line, keeping whatever earlier turns wrote, so a turn that does not
start from the branch's previous commits is visible in the file."""

import sys
from pathlib import Path

prompt = Path(sys.argv[1]).read_text().strip().splitlines()
revisions = Path.cwd() / "REVISIONS.md"
before = revisions.read_text() if revisions.exists() else ""
turn = before.count("\n") + 1
revisions.write_text(f"{before}turn {turn}: {prompt[-1] if prompt else ''}\n")
print(f"wrote turn {turn} ({len(before)} characters were there)")
