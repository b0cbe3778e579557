"""The terminal client run as a real subprocess with its own config and data dirs."""

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT


@dataclass
class Result:
    code: int
    out: str
    err: str


class CliRunner:
    """``python -m agentvine_cli …`` with XDG dirs under a temporary directory."""

    def __init__(self, home):
        self.home = home
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))},
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "200",
            "AGENTVINE_CONNECT_TIMEOUT": "1",
        }

    def command(self, *args):
        return [sys.executable, "-m", "agentvine_cli", *args]

    def __call__(self, *args, stdin=None, timeout=60):
        done = subprocess.run(
            self.command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.home,
            timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def popen(self, *args, **kwargs):
        return subprocess.Popen(self.command(*args), env=self.env, cwd=self.home, text=True, **kwargs)


@pytest.fixture
def cli(tmp_path):
    return CliRunner(tmp_path)


@pytest.fixture
def operator_token(operator):
    from workers_app.services import api_token_create

    return api_token_create(user=operator, name="cli")[1]


class RestartableServer:
    """A real daphne the test can stop and start again on the same port."""

    def __init__(self, tmp_path):
        from tests.chat_app.conftest import DaphneServer

        self._factory = DaphneServer
        self.tmp_path = tmp_path
        self.starts = 0
        self.current = None
        self.port = None
        self.start()
        self.url = self.current.url

    def start(self):
        self.starts += 1
        self.current = self._factory(self.tmp_path / f"daphne-{self.starts}.log", port=self.port)
        self.port = self.current.port

    def stop(self):
        self.current.stop()


@pytest.fixture
def server(transactional_db, clean_broker, tmp_path):
    running = RestartableServer(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def logged_in(cli, server, operator_token):
    result = cli("login", "--server", server.url, "--token", operator_token)
    assert result.code == 0, result.err
    return cli
