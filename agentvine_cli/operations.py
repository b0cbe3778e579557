"""Write commands as outbox entries, validated locally before anything is stored.

Only what could ever succeed is queued: a task id that is not a UUID, an
empty message or a malformed batch file is refused at once, offline or not.
"""

import json
import uuid
from dataclasses import dataclass

MAX_TITLE_CHARS = 200
MAX_TEXT_CHARS = 100_000
MAX_BATCH_MESSAGES = 500
PRIORITIES = ("high", "normal", "low")
TASK_TYPES = ("feature", "bugfix", "test", "docs")

ERR_NOT_A_TASK_ID = "unknown task {value}: a task id looks like 0b7f3c2e-…"
ERR_UNKNOWN_TASK = "unknown task {value}"
ERR_UNKNOWN_QUESTION = "unknown question {value}"
ERR_NOT_A_QUESTION_ID = "unknown question {value}: a question id looks like 0b7f3c2e-…"
ERR_TITLE = f"a task title needs 1 to {MAX_TITLE_CHARS} characters"
ERR_EMPTY_TEXT = "the message is empty"
ERR_TEXT_TOO_LONG = f"the message is longer than {MAX_TEXT_CHARS} characters"
ERR_REVIEW_CHOICE = 'give one of --approve or --changes "what should change"'
ERR_NO_TARGET = "give the task, agent session or worker to send to"
ERR_BATCH_UNREADABLE = "batch file {path}: {reason}"
ERR_BATCH_SHAPE = (
    'batch file {path}: expected a JSON object {{"to": "<task, session or worker>", "messages": ["…", …]}}'
)
ERR_BATCH_MESSAGES = "batch file {path}: messages must be a list of 1 to {limit} non-empty strings"
ERR_BUDGET = "a budget is a dollar figure of at least 0, like 5 or 0.50 (or none)"


class InvalidInput(ValueError):
    pass


@dataclass(frozen=True)
class Operation:
    target: str
    summary: str
    method: str
    path: str
    body: dict | None = None
    not_found: str | None = None


def _uuid(value, message):
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise InvalidInput(message.format(value=value)) from None


def task_id(value):
    return _uuid(value, ERR_NOT_A_TASK_ID)


def _text(text):
    if not text or not text.strip():
        raise InvalidInput(ERR_EMPTY_TEXT)
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(ERR_TEXT_TOO_LONG)
    return text


def _target(target):
    target = (target or "").strip()
    if not target:
        raise InvalidInput(ERR_NO_TARGET)
    return target


def budget(value):
    """A budget as typed (``5``, ``0.50``, ``$2``; ``none`` for no limit): a
    string the API takes, or None."""
    text = str(value).strip().lstrip("$")
    if text.lower() in ("none", "no", "off"):
        return None
    try:
        amount = float(text)
    except ValueError:
        raise InvalidInput(ERR_BUDGET) from None
    if not 0 <= amount < 1e8:
        raise InvalidInput(ERR_BUDGET)
    return f"{amount:.4f}"


def task_create(
    *,
    title,
    description="",
    priority="normal",
    task_type="feature",
    executor="",
    repository_url="",
    after=(),
    budget_usd=None,
):
    title = (title or "").strip()
    if not title or len(title) > MAX_TITLE_CHARS:
        raise InvalidInput(ERR_TITLE)
    body = {"title": title, "description": description, "priority": priority, "task_type": task_type}
    if budget_usd is not None:
        body["budget_usd"] = budget(budget_usd)
    if after:
        body["depends_on"] = [task_id(parent) for parent in after]
    if executor:
        body["executor"] = executor
    if repository_url:
        body["repository_url"] = repository_url
    return Operation(target="tasks", summary=f"create task {title!r}", method="POST", path="tasks/", body=body)


def task_action(*, action, task):
    task = task_id(task)
    return Operation(
        target=f"task:{task}",
        summary=f"{action} task {task}",
        method="POST",
        path=f"tasks/{task}/{action}/",
        not_found=ERR_UNKNOWN_TASK.format(value=task),
    )


def task_budget(*, task, amount):
    """Set ``task``'s budget (``none``: no limit); raised above what it spent,
    a task paused on its budget resumes."""
    task = task_id(task)
    value = budget(amount)
    return Operation(
        target=f"task:{task}",
        summary=f"set the budget of task {task} to {'none' if value is None else '$' + value}",
        method="PATCH",
        path=f"tasks/{task}/",
        body={"budget_usd": value},
        not_found=ERR_UNKNOWN_TASK.format(value=task),
    )


def _to_agent(*, to, path, summary, **body):
    # Messages to one agent share a target, so the outbox keeps their order.
    return Operation(target=f"to:{to}", summary=summary, method="POST", path=path, body={"to": to, **body})


def message_send(*, to, text):
    to = _target(to)
    return _to_agent(to=to, path="chat/messages/", summary=f"send to {to}: {text[:60]!r}", text=_text(text))


def batch_send(*, to, texts):
    to = _target(to)
    texts = [_text(text) for text in texts]
    return _to_agent(to=to, path="chat/batches/", summary=f"send {len(texts)} messages to {to}", texts=texts)


def batch_file_read(path):
    """The batch in ``path`` as an Operation; any problem is an InvalidInput naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidInput(ERR_BATCH_UNREADABLE.format(path=path, reason=reason)) from None
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise InvalidInput(ERR_BATCH_UNREADABLE.format(path=path, reason=reason)) from None
    if not isinstance(data, dict) or not isinstance(data.get("to"), str) or not data["to"].strip():
        raise InvalidInput(ERR_BATCH_SHAPE.format(path=path))
    messages = data.get("messages")
    if (
        not isinstance(messages, list)
        or not 1 <= len(messages) <= MAX_BATCH_MESSAGES
        or not all(isinstance(m, str) and m.strip() and len(m) <= MAX_TEXT_CHARS for m in messages)
    ):
        raise InvalidInput(ERR_BATCH_MESSAGES.format(path=path, limit=MAX_BATCH_MESSAGES))
    return batch_send(to=data["to"], texts=messages)


def question_answer(*, question, text):
    question = _uuid(question, ERR_NOT_A_QUESTION_ID)
    return Operation(
        target=f"question:{question}",
        summary=f"answer question {question}",
        method="POST",
        path=f"chat/questions/{question}/answer/",
        body={"text": _text(text)},
        not_found=ERR_UNKNOWN_QUESTION.format(value=question),
    )


def task_review(*, task, approve=False, changes=None, into=""):
    """``approve`` the task's results (merge its branch), or ask for ``changes``."""
    task = task_id(task)
    if approve == (changes is not None):
        raise InvalidInput(ERR_REVIEW_CHOICE)
    if approve:
        body, summary = {"action": "approve"}, f"approve task {task}"
    else:
        body, summary = {"action": "request_changes", "comment": _text(changes)}, f"request changes on task {task}"
    if into:
        body["into"] = into
    return Operation(
        target=f"task:{task}",
        summary=summary,
        method="POST",
        path=f"tasks/{task}/review/",
        body=body,
        not_found=ERR_UNKNOWN_TASK.format(value=task),
    )
