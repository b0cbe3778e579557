"""A unified diff as HTML table rows, its code highlighted by Pygments.

Everything in a diff is untrusted (file names and contents are the agent's):
every piece of text goes through ``html.escape`` here and nowhere else is
marked safe. Highlighting only wraps escaped text in ``<span class="…">``
with Pygments' short token class names; the colours are a static stylesheet
(static/agentvine/diff.css), since the console's Content-Security-Policy
allows no inline style.
"""

import re
from functools import cache, lru_cache
from html import escape
from posixpath import basename

from pygments.lexers import find_lexer_class_for_filename, get_all_lexers
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")
# Lexers guessed from a file name are cheap; guessing from content is not
# (it tries every lexer), so a file without a known extension is plain text.
PLAIN = None
_classes = {}


def patch_split(patch):
    """``patch`` (git's unified diff of several files) as one text per file."""
    chunks, current = [], None
    for line in patch.splitlines(keepends=True):
        if line.startswith("diff --git "):
            current = [line]
            chunks.append(current)
        elif current is not None:
            current.append(line)
    return ["".join(chunk) for chunk in chunks]


@cache
def _lexer_patterns():
    """Every file name and ``*.suffix`` Pygments' lexers claim."""
    names, suffixes = set(), set()
    for _, _, patterns, _ in get_all_lexers(plugins=False):
        for pattern in patterns:
            if not any(c in pattern for c in "*?["):
                names.add(pattern)
            elif pattern.startswith("*.") and not any(c in pattern[1:] for c in "*?["):
                suffixes.add(pattern[1:])
    return names, suffixes


def _lexer_key(name):
    """What decides ``name``'s lexer: the name itself when a lexer claims it
    (Makefile, CMakeLists.txt), else its longest claimed suffix."""
    names, suffixes = _lexer_patterns()
    if name in names:
        return name
    dot = name.find(".")
    while dot != -1:
        if name[dot:] in suffixes:
            return "x" + name[dot:]
        dot = name.find(".", dot + 1)
    return name


@lru_cache(maxsize=1024)  # bounded: unclaimed names are their own key
def _lexer_for_key(key):
    # Finding a lexer by file name tries every lexer's patterns (about a
    # millisecond); a run that changed a thousand .py files asks once.
    try:
        found = find_lexer_class_for_filename(key)
    except ClassNotFound:
        found = None
    return found(stripnl=False, ensurenl=False) if found else PLAIN


def _lexer(path):
    return _lexer_for_key(_lexer_key(basename(path)))


def _css_class(token_type):
    found = _classes.get(token_type)
    if found is None:
        walk = token_type
        while walk not in STANDARD_TYPES:
            walk = walk.parent
        found = _classes[token_type] = STANDARD_TYPES[walk]
    return found


def _highlighted_lines(lexer, lines):
    """``lines`` of code as escaped HTML, one string per line, highlighted
    in one pass (so a string or comment spanning lines is seen whole)."""
    if lexer is PLAIN or not lines:
        return [escape(line, quote=False) for line in lines]
    out, current = [], []
    for token_type, value in lexer.get_tokens("\n".join(lines)):
        css = _css_class(token_type)
        pieces = value.split("\n")
        for i, piece in enumerate(pieces):
            if i:
                out.append("".join(current))
                current = []
            if piece:
                text = escape(piece, quote=False)
                current.append(f'<span class="{css}">{text}</span>' if css else text)
    out.append("".join(current))
    # A lexer may drop or add a trailing newline; the line count is the diff's.
    out += [""] * (len(lines) - len(out))
    return out[: len(lines)]


ROW_KINDS = {"+": "add", "-": "del", " ": "ctx"}


def file_diff_html(path, chunk):
    """``(rows, changed lines)``: one file's diff (a chunk of
    :func:`patch_split`) as ``<tr>`` rows with old and new line numbers."""
    body = chunk.splitlines()
    start = 0
    while start < len(body) and not body[start].startswith("@@"):
        start += 1
    code_lines, parsed = [], []
    for line in body[start:]:
        kind = ROW_KINDS.get(line[:1])
        if kind is not None:
            parsed.append((kind, len(code_lines)))
            code_lines.append(line[1:])
        elif line.startswith("@@"):
            parsed.append(("hunk", line))
        else:  # "\ No newline at end of file"
            parsed.append(("note", line))
    html_lines = _highlighted_lines(_lexer(path), code_lines)
    rows, old, new, changed = [], 0, 0, 0
    for kind, value in parsed:
        if kind in ("hunk", "note"):
            match = HUNK.match(value) if kind == "hunk" else None
            if match:
                old, new = int(match.group(1)), int(match.group(2))
            rows.append(_row(kind, "", "", escape(value)))
        elif kind == "add":
            rows.append(_row(kind, "", new, "+" + html_lines[value]))
            new, changed = new + 1, changed + 1
        elif kind == "del":
            rows.append(_row(kind, old, "", "-" + html_lines[value]))
            old, changed = old + 1, changed + 1
        else:
            rows.append(_row(kind, old, new, " " + html_lines[value]))
            old, new = old + 1, new + 1
    return "\n".join(rows), changed


def _row(kind, old, new, code):
    return f'<tr class="{kind}"><td class="ln">{old}</td><td class="ln">{new}</td><td class="code">{code}</td></tr>'
