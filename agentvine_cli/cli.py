"""The ``agentvine`` command line (click).

Exit codes: 0 done (or queued for later), 1 refused (bad input, 4xx),
3 the server is offline and the command is a read that cannot wait.
"""

import sys

import click
from rich.console import Console
from rich.table import Table

from agentvine_cli import __version__
from agentvine_cli.client import ApiError, Client, ServerUnavailable
from agentvine_cli.config import ConfigError, Settings, settings_load, settings_save

EXIT_REFUSED = 1
EXIT_OFFLINE = 3

MSG_LOGGED_IN = "logged in to {server} as {user}; settings in {path}"
MSG_SAVED_UNCHECKED = "saved settings in {path}; the server is unreachable, the token was not checked"
ERR_BAD_SERVER_URL = "server URL must start with http:// or https://"

console = Console()


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


def _client():
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


def _table(title, columns, rows):
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


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
    click.echo(MSG_LOGGED_IN.format(server=server, user=token[:8] + "…", path=path))


@cli.group()
def tasks():
    """Create, list, show, cancel and retry tasks."""


@tasks.command("list")
@click.option("--status", help="queued, running, waiting, completed, failed, cancelled…")
@click.option("--search", help="text in the title or description")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def tasks_list(status, search, limit):
    """Newest tasks first."""
    client = _client()
    rows = read(lambda: client.get_all("tasks/", limit=limit, status=status, search=search))
    _table(
        "tasks",
        ["id", "title", "status", "priority", "type", "created"],
        [(t["id"], t["title"], t["status"], t["priority"], t["task_type"], t["created_at"][:19]) for t in rows],
    )


def main():
    try:
        cli.main(prog_name="agentvine", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
