"""A command-profile agent whose work is hostile to a web page: a file of
HTML/script payload, a file whose very name is markup, and a Python file
(something to highlight). Its changes must be shown as text, never run."""

from pathlib import Path

root = Path.cwd()
(root / "payload.html").write_text('<script>window.__pwned=1</script>\n<img src=x onerror="window.__pwned=2">\n')
# Plain text has no lexer to split it into tokens: only escaping holds it.
(root / "notes.txt").write_text('<script>window.__pwned=4</script><img src=x onerror="window.__pwned=5">\n')
(root / "<svg onload=window.__pwned=3>.txt").write_text("named like markup\n")
(root / "tool.py").write_text("def tool():\n    return '<b>not bold</b>'\n")
print("wrote the payload")
