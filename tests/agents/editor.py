"""A command-profile agent that edits, adds, deletes and renames files in its
workspace (its working directory), including a binary file and a file whose
text is an HTML/script payload."""

from pathlib import Path

root = Path.cwd()
with open(root / "README.md", "a") as readme:
    readme.write("Edited by the agent.\n")
(root / "src").mkdir(exist_ok=True)
(root / "src" / "added.py").write_text("def added():\n    return 1\n")
(root / "payload.html").write_text('<script>alert("x")</script>\n')
(root / "logo.bin").write_bytes(bytes(range(256)))
for name in ("obsolete.txt",):
    if (root / name).exists():
        (root / name).unlink()
if (root / "notes.txt").exists():
    (root / "notes.txt").rename(root / "docs-notes.txt")
print("edited the workspace")
