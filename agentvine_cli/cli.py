"""The ``agentvine`` command line (click).

Exit codes: 0 done or queued for later, 1 refused (bad input, a 4xx from the
server, not logged in), 3 the server is offline and the command is a read.
"""

import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from agentvine_cli import __version__, operations
from agentvine_cli.client import ApiError, Client, ServerUnavailable
from agentvine_cli.config import ConfigError, Settings, settings_load, settings_save
from agentvine_cli.outbox import DONE, FAILED, PENDING, Outbox, outbox_sync

EXIT_REFUSED = 1
EXIT_OFFLINE = 3
# Above this many entries `sync` shows a progress bar.
PROGRESS_MIN_ENTRIES = 20

MSG_LOGGED_IN = "logged in to {server}; settings in {path}"
MSG_SAVED_UNCHECKED = "saved settings in {path}; the server is unreachable, the token was not checked"
MSG_QUEUED = "queued (#{id}) — will sync when online"
MSG_SYNCED = "synced {sent} entries, {failed} failed, {pending} pending"
MSG_SYNC_OFFLINE = "server offline ({reason}): {pending} entries still queued"
MSG_SYNC_UNAUTHORIZED = "{reason}: {pending} entries kept; run agentvine login"
MSG_NOTHING_QUEUED = "outbox is empty"
ERR_BAD_SERVER_URL = "server URL must start with http:// or https://"

console = Console(highlight=False)


class Failure(click.ClickException):
    """One line on stderr and a chosen exit code."""

    def __init__(self, message, exit_code=EXIT_REFUSED):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _settings():
    try:
        return settings_load()
    except ConfigError as exc:
        raise Failure(exc) from None


def client_for_settings():
    settings = _settings()
    return Client(settings.server, settings.token)


def read(call):
    """Run a read; an unreachable server is a clear error, never a stale answer."""
    try:
        return call()
    except ServerUnavailable as exc:
        raise Failure(exc, EXIT_OFFLINE) from None
    except ApiError as exc:
        raise Failure(exc.message) from None


def build(factory, **kwargs):
    try:
        return factory(**kwargs)
    except operations.InvalidInput as exc:
        raise Failure(exc) from None


def submit(operation, *, client=None, outbox=None, try_now=True):
    """Store ``operation`` in the outbox, then replay the outbox up to it.

    Going through the outbox even when online keeps the order with writes
    queued earlier, and makes a crash right after sending harmless. Returns
    (entry, response data or None when it stays queued).
    """
    client = client or client_for_settings()
    own_outbox = outbox is None
    outbox = outbox or Outbox()
    try:
        entry = outbox.enqueue(
            server=client.server,
            target=operation.target,
            summary=operation.summary,
            method=operation.method,
            path=operation.path,
            body=operation.body,
        )
        result = outbox_sync(outbox, client, until_id=entry.id) if try_now else None
        entry = outbox.get(entry.id)
        if result is not None and result.unauthorized is not None and entry.status == PENDING:
            # Never queue behind credentials the server refuses.
            outbox.discard(entry)
            raise Failure(result.unauthorized.message)
        if entry.status == DONE:
            return entry, entry.response_data
        if entry.status == FAILED:
            # The person sees the refusal now; nothing is left to retry.
            outbox.discard(entry)
            message = entry.error.split(": ", 1)[-1]
            if entry.error.startswith("HTTP 404") and operation.not_found:
                message = operation.not_found
            raise Failure(message)
        return entry, None
    finally:
        if own_outbox:
            outbox.close()


def report(entry, data, describe):
    if data is None:
        click.echo(MSG_QUEUED.format(id=entry.id))
    else:
        click.echo(describe(data))


def _table(title, columns, rows):
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def _when(value):
    return value[:19].replace("T", " ") if value else ""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentvine")
def cli():
    """Drive AgentVine from a terminal; works offline and syncs when back."""


@cli.command()
@click.option("--server", prompt="Server URL", help="e.g. https://agentvine.example")
@click.option("--token", prompt="API token", hide_input=True, help="an operator API token (avo_…)")
def login(server, token):
    """Store the server URL and an operator API token (checked when online)."""
    server = server.strip().rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise Failure(ERR_BAD_SERVER_URL)
    token = token.strip()
    client = Client(server, token)
    try:
        client.get("queue/")
    except ServerUnavailable:
        path = settings_save(Settings(server=server, token=token))
        click.echo(MSG_SAVED_UNCHECKED.format(path=path))
        return
    except ApiError as exc:
        raise Failure(exc.message) from None
    path = settings_save(Settings(server=server, token=token))
    click.echo(MSG_LOGGED_IN.format(server=server, path=path))


# --- tasks ------------------------------------------------------------------------


@cli.group()
def tasks():
    """Create, list, show, cancel and retry tasks."""


@tasks.command("list")
@click.option("--status", help="blocked, queued, in_progress, paused_budget, completed, failed, cancelled")
@click.option("--search", help="text in the title or description")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def tasks_list(status, search, limit):
    """Newest tasks first."""
    client = client_for_settings()
    rows = read(lambda: client.get_all("tasks/", limit=limit, status=status, search=search))
    _table(
        "tasks",
        ["id", "title", "status", "priority", "type", "created"],
        [(t["id"], t["title"], t["status"], t["priority"], t["task_type"], _when(t["created_at"])) for t in rows],
    )


def _task_line(task):
    return f"{task['id']}  {task['status']:<12} {task['priority']:<7} {task['title']}"


@tasks.command("show")
@click.argument("task")
def tasks_show(task):
    """One task in full."""
    task = build(operations.task_id, value=task)
    client = client_for_settings()
    try:
        data = read(lambda: client.get(f"tasks/{task}/"))
    except Failure as exc:
        if "Not found" in exc.message or "No Task matches" in exc.message:
            raise Failure(operations.ERR_UNKNOWN_TASK.format(value=task)) from None
        raise
    fields = ("id", "title", "status", "priority", "task_type", "executor", "repository_url", "branch_name")
    for field in (*fields, "budget_usd", "concurrency_key"):
        click.echo(f"{field + ':':<16}{data.get(field) or ''}")
    for field in ("created_by", "created_at", "updated_at", "completed_at"):
        click.echo(f"{field + ':':<16}{data.get(field) or ''}")
    if data.get("description"):
        click.echo("")
        click.echo(data["description"])


@tasks.command("create")
@click.argument("title")
@click.option("-d", "--description", default="")
@click.option("-p", "--priority", type=click.Choice(operations.PRIORITIES), default="normal", show_default=True)
@click.option("-t", "--type", "task_type", type=click.Choice(operations.TASK_TYPES), default="feature")
@click.option("--executor", default="", help="executor profile (default: the server's)")
@click.option("--repo", "repository_url", default="", help="git repository the agent works in")
@click.option(
    "--after", multiple=True, metavar="ID", help="start only once this task is completed (repeat for several)"
)
@click.option("--budget", "budget_usd", metavar="USD", help="what its agents may spend (default: its type's)")
def tasks_create(**values):
    """Queue a new task for an agent."""
    operation = build(operations.task_create, **values)
    entry, data = submit(operation)
    report(entry, data, lambda task: f"created {_task_line(task)}")


@tasks.command("budget")
@click.argument("task")
@click.argument("amount")
def tasks_budget(task, amount):
    """Set TASK's budget in US dollars (AMOUNT, or none); raising it resumes a task paused on its budget."""
    entry, data = submit(build(operations.task_budget, task=task, amount=amount))
    report(entry, data, lambda task: f"budget ${task['budget_usd'] or 'none'}: {_task_line(task)}")


@tasks.command("tree")
@click.argument("task")
def tasks_tree(task):
    """The tasks that depend on TASK (and the subtasks its agent made), as a tree."""
    task = build(operations.task_id, value=task)
    client = client_for_settings()
    try:
        tree = read(lambda: client.get(f"tasks/{task}/tree/"))
    except Failure as exc:
        if "Not found" in exc.message or "No Task matches" in exc.message:
            raise Failure(operations.ERR_UNKNOWN_TASK.format(value=task)) from None
        raise
    nodes = {node["id"]: node for node in tree["nodes"]}
    below = {}
    for parent, child, kind in tree["edges"]:
        below.setdefault(parent, []).append((child, kind))
    shown = set()

    def line(node_id, depth, kind):
        node = nodes[node_id]
        mark = "+ " if kind == "subtask" else ""
        again = " (see above)" if node_id in shown else ""
        click.echo(f"{'  ' * depth}{mark}{node['status']:<11} {node['id'][:8]}  {node['title']}{again}")
        if node_id in shown:
            return
        shown.add(node_id)
        if node["status"] == "blocked" and node.get("blocked_reason"):
            click.echo(f"{'  ' * (depth + 1)}  waits: {node['blocked_reason']}")
        for child, child_kind in below.get(node_id, []):
            line(child, depth + 1, child_kind)

    line(tree["nodes"][0]["id"], 0, "root")
    if tree["truncated"]:
        click.echo(f"… more than {len(nodes)} tasks; the rest is not shown")


@tasks.command("cancel")
@click.argument("task")
def tasks_cancel(task):
    """Stop a task (its running agent is asked to stop)."""
    entry, data = submit(build(operations.task_action, action="cancel", task=task))
    report(entry, data, lambda task: f"cancelled {_task_line(task)}")


@tasks.command("retry")
@click.argument("task")
def tasks_retry(task):
    """Run a failed or cancelled task again."""
    entry, data = submit(build(operations.task_action, action="retry", task=task))
    report(entry, data, lambda task: f"retrying {_task_line(task)}")


REVIEW_DONE = {
    "merged": "merged {task} into {base} ({commit})",
    "fast_forward": "merged {task} into {base} ({commit}, fast-forward)",
    "already_merged": "{base} already holds {task} ({commit})",
    "changes_requested": "changes requested on {task}: its agent's next turn starts with them",
}


def _review_line(data):
    line = REVIEW_DONE[data["outcome"]].format(
        task=data["task"], base=data["base_branch"], commit=(data["result_commit"] or "")[:12]
    )
    return line + (", pushed to the origin" if data.get("pushed") else "")


@cli.command()
@click.argument("task")
@click.option("--approve", is_flag=True, help="Merge the task's branch into its base (pushed when configured).")
@click.option("--changes", metavar="TEXT", help="Ask for changes: TEXT starts the agent's next turn.")
@click.option("--into", default="", help="The base branch to merge into (default: the origin's default branch).")
def review(task, approve, changes, into):
    """Approve a task's results, or request changes to them."""
    operation = build(operations.task_review, task=task, approve=approve, changes=changes, into=into)
    entry, data = submit(operation)
    report(entry, data, _review_line)


# --- messages ---------------------------------------------------------------------


def _sent_line(data):
    if isinstance(data, list):
        return f"sent {len(data)} messages to {data[0]['conversation_id'] if data else '?'}"
    return f"sent to {data['conversation_id']} ({data['status']})"


@cli.command()
@click.argument("target", required=False)
@click.argument("message", required=False)
@click.option("--batch", "batch_file", type=click.Path(dir_okay=False), help='JSON file {"to": …, "messages": […]}')
def send(target, message, batch_file):
    """Send MESSAGE to an agent: TARGET is a task id, an agent session or a worker name.

    With --batch FILE, send an ordered batch, delivered whole and in order.
    """
    if batch_file:
        if target or message:
            raise Failure("give either --batch FILE or TARGET MESSAGE")
        operation = build(operations.batch_file_read, path=batch_file)
    else:
        if message is None:
            raise Failure("usage: agentvine send TARGET MESSAGE (or --batch FILE)")
        operation = build(operations.message_send, to=target, text=message)
    entry, data = submit(operation)
    report(entry, data, _sent_line)


@cli.command()
@click.argument("question_id")
@click.argument("text")
def answer(question_id, text):
    """Answer a question an agent asked."""
    entry, data = submit(build(operations.question_answer, question=question_id, text=text))
    report(entry, data, lambda message: f"answered {question_id}")


# --- reads ------------------------------------------------------------------------


def _diff_line_colour(line):
    if line.startswith(("+++", "---", "diff --git", "index ")):
        return {"bold": True}
    if line.startswith("+"):
        return {"fg": "green"}
    if line.startswith("-"):
        return {"fg": "red"}
    if line.startswith("@@"):
        return {"fg": "cyan"}
    return {}


@cli.command()
@click.argument("task")
@click.option("--stat", is_flag=True, help="the changed files with their +/- counts instead of the diff")
@click.option("--attempt", type=click.IntRange(min=1), default=None, help="one attempt instead of the whole task")
def diff(task, stat, attempt):
    """What TASK's agent changed on its branch, as a unified diff (from the server's repository)."""
    task = build(operations.task_id, value=task)
    client = client_for_settings()
    try:
        if stat:
            data = read(lambda: client.get(f"tasks/{task}/changes/", attempt=attempt, limit=1000))
        else:
            text = read(
                lambda: client.get_text(f"tasks/{task}/changes/", accept="text/x-diff", format="diff", attempt=attempt)
            )
    except Failure as exc:
        if "No Task matches" in exc.message:
            raise Failure(operations.ERR_UNKNOWN_TASK.format(value=task)) from None
        raise
    if not stat:
        # The agent's text goes out as it is: click, not rich, so nothing in
        # it is read as markup; colour only on a terminal.
        for line in text.splitlines():
            click.secho(line, **_diff_line_colour(line))
        return
    change_set = data["whole"] if attempt is None else data["attempts"][0]
    width = max((len(_stat_name(f)) for f in change_set["files"]), default=0)
    for entry in change_set["files"]:
        counts = "binary" if entry["binary"] else f"+{entry['insertions']} -{entry['deletions']}"
        click.echo(f" {_stat_name(entry):<{width}} | {counts}")
    more = change_set["files_total"] - len(change_set["files"])
    if more:
        click.echo(f" … and {more} more files")
    click.echo(
        f" {change_set['files_total']} files changed, {change_set['insertions']} insertions(+), "
        f"{change_set['deletions']} deletions(-)  {data['branch']} @ {change_set['head_commit'][:12]}"
    )


def _stat_name(entry):
    return entry["path"] if entry["old_path"] == entry["path"] else f"{entry['old_path']} => {entry['path']}"


@cli.command()
@click.option("--status", help="idle, busy, offline…")
def workers(status):
    """Worker slots and what they run."""
    client = client_for_settings()
    rows = read(lambda: client.get_all("workers/", status=status))
    _table(
        "workers",
        ["name", "status", "host", "work order", "last heartbeat"],
        [(w["name"], w["status"], w["hostname"], w["current_work_order"], _when(w["last_heartbeat_at"])) for w in rows],
    )


@cli.command()
@click.option("--status", help="active, idle, terminated…")
def sessions(status):
    """Agent sessions: send to one with `agentvine send SESSION MESSAGE`."""
    client = client_for_settings()
    rows = read(lambda: client.get_all("sessions/", status=status))
    _table(
        "agent sessions",
        ["id", "session id", "status", "task", "worker", "last activity"],
        [
            (s["id"], s["session_id"], s["status"], s.get("task"), s.get("worker"), _when(s.get("last_activity_at")))
            for s in rows
        ],
    )


@cli.command()
def status():
    """Queue depth per priority and work orders per state."""
    client = client_for_settings()
    data = read(lambda: client.get("queue/"))
    oldest = data.get("oldest_waiting_seconds", {})
    _table(
        "queue depth",
        ["queue", "waiting", "oldest (s)"],
        [
            (name, depth, "" if oldest.get(name) is None else f"{oldest[name]:.0f}")
            for name, depth in data["depth"].items()
        ],
    )
    _table("work orders", ["status", "count"], sorted(data["by_status"].items()))


@cli.command()
@click.option(
    "--by", "group", type=click.Choice(["day", "operator", "executor", "repository"]), default="day", show_default=True
)
@click.option("--days", type=click.IntRange(1, 366), default=7, show_default=True)
def spend(group, days):
    """What agents spent over the last DAYS days, per day, operator, executor or repository."""
    client = client_for_settings()
    data = read(lambda: client.get(f"spend/?group={group}&days={days}"))
    _table(
        f"spend per {group}, last {days} days",
        [group, "runs", "cost (US$)"],
        [(row["key"] or "-", row["runs"], f"{float(row['cost_usd']):.4f}") for row in data["rows"]],
    )
    budgets = data["budgets"]
    line = f"total ${float(data['total_usd']):.2f}; today ${float(budgets['spent_today_usd']):.2f}"
    if budgets["daily_usd"] is not None:
        line += f" of a ${budgets['daily_usd']:.2f} daily budget"
    if budgets["paused_tasks"]:
        line += f"; {budgets['paused_tasks']} tasks paused on their budget"
    click.echo(line)


@cli.command()
@click.option("--clear-failed", is_flag=True, help="forget the failed entries")
def queue(clear_failed):
    """The local outbox: writes waiting to sync, and the ones the server refused."""
    outbox = Outbox()
    try:
        if clear_failed:
            click.echo(f"removed {outbox.clear_failed()} failed entries")
            return
        show_outbox(outbox)
    finally:
        outbox.close()


def show_outbox(outbox):
    pending, failed = outbox.pending(), outbox.failed()
    if not pending and not failed:
        click.echo(MSG_NOTHING_QUEUED)
        return
    if pending:
        _table(
            f"{PENDING} ({len(pending)})",
            ["#", "queued at", "command"],
            [(e.id, _stamp(e.created_at), e.summary) for e in pending],
        )
    if failed:
        _table(f"{FAILED} ({len(failed)})", ["#", "command", "reason"], [(e.id, e.summary, e.error) for e in failed])


def _stamp(seconds):
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


@cli.command()
def sync():
    """Send the queued writes now, oldest first."""
    client = client_for_settings()
    outbox = Outbox()
    try:
        sync_now(outbox, client)
    finally:
        outbox.close()


def sync_now(outbox, client, *, quiet=False):
    total = len(outbox.pending(server=client.server))
    if total >= PROGRESS_MIN_ENTRIES and not quiet and console.is_terminal:
        columns = [TextColumn("syncing"), BarColumn(), MofNCompleteColumn()]
        with Progress(*columns, console=console, transient=True) as progress:
            bar = progress.add_task("sync", total=total)
            result = outbox_sync(outbox, client, on_entry=lambda entry: progress.advance(bar))
    else:
        result = outbox_sync(outbox, client)
    pending = outbox.count(PENDING)
    if result.unauthorized is not None:
        raise Failure(MSG_SYNC_UNAUTHORIZED.format(reason=result.unauthorized.message, pending=pending))
    if result.unavailable is not None:
        message = MSG_SYNC_OFFLINE.format(reason=result.unavailable.reason, pending=pending)
        if quiet:
            return result
        raise Failure(message, EXIT_OFFLINE)
    if not quiet:
        click.echo(MSG_SYNCED.format(sent=result.sent, failed=result.failed, pending=pending))
    return result


@cli.command()
def shell():
    """Interactive prompt: commands, `!TARGET message`, /queue, /sync, /quit."""
    from agentvine_cli.shell import shell_run

    sys.exit(shell_run(client_for_settings()))


def main():
    try:
        cli.main(prog_name="agentvine", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
