"""``sandbox: bwrap``: an agent in a bubblewrap sandbox (Debian's ``bubblewrap``).

Inside, the agent sees:

- its workspace and its HOME, read-write;
- the toolchain read-only: ``/usr`` (and the ``/bin``, ``/lib`` … links into
  it), the Python interpreter the worker runs on (its virtualenv and base
  install), a few files of ``/etc`` (name resolution, certificates, users,
  time zone), and what the profile lists in ``sandbox_read_only`` (an agent
  CLI installed elsewhere, for example);
- the small client it asks humans with (``agentvine-ask``, ``agentvine-mcp``
  and their two modules), read-only;
- its own ``/proc`` (a PID namespace: no other process of the host), a
  private ``/dev`` and ``/tmp``.

It does not see other tasks' workspaces, the repository cache, the
platform's code or ``var/``, or any other file of the host. It keeps the
network unless the profile says ``"network": false``: then it has a network
namespace of its own where only the API reaches it, relayed
(:mod:`workers_app.executors.api_relay`). It runs with no
capabilities, dies with its worker, and gets only the environment the
executor built (an allowlist).

A worker where bubblewrap cannot run (not installed, no user namespaces)
fails such a profile at once with one sentence; it never runs it unsandboxed.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from workers_app.executors.api_relay import (
    ERR_API_HOST,
    INSIDE_DIR,
    SOCKET_NAME,
    ApiRelay,
    api_address,
    is_loopback_or_name,
)
from workers_app.executors.base import ExecutorConfigError
from workers_app.executors.process import require_binary

BWRAP = "bwrap"
SANDBOXES = ("", "none", "bwrap")
# The repository's root, for the ask client's files (chat_app/…); found from
# here rather than imported: executors import nothing of the platform.
PLATFORM_ROOT = Path(__file__).resolve().parents[2]
AGENT_CLIENT_FILES = (
    "chat_app/__init__.py",
    "chat_app/ask_client.py",
    "chat_app/mcp_server.py",
    "chat_app/agent_bin",
)
ETC_FILES = (
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "passwd",
    "group",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "mime.types",
    "gitconfig",
)
RELAY_SCRIPT = str(Path(__file__).resolve().parent / "api_relay.py")
TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

ERR_UNKNOWN_SANDBOX = "unknown sandbox {name!r} (use bwrap)"
ERR_NOT_INSTALLED = "sandbox bwrap is not installed on this worker (apt-get install bubblewrap)"
ERR_CANNOT_RUN = "sandbox bwrap cannot run on this worker: {reason}"
ERR_READ_ONLY_PATHS = "executor profile's sandbox_read_only must be a list of absolute paths"

_probed = {}


def sandbox_name(profile):
    name = profile.get("sandbox") or ""
    if name not in SANDBOXES:
        raise ExecutorConfigError(ERR_UNKNOWN_SANDBOX.format(name=name))
    return "" if name == "none" else name


def bwrap_check():
    """Fail with one sentence unless bubblewrap can start a sandbox here (probed once per process)."""
    if "error" not in _probed:
        binary = shutil.which(BWRAP)
        if binary is None:
            _probed["error"] = ERR_NOT_INSTALLED
        else:
            probe = subprocess.run(
                [binary, "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            reason = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
            _probed["error"] = "" if probe.returncode == 0 else ERR_CANNOT_RUN.format(reason=reason)
    if _probed["error"]:
        raise ExecutorConfigError(_probed["error"])


def _read_only_paths(profile):
    extra = profile.get("sandbox_read_only") or []
    if not isinstance(extra, list | tuple) or not all(isinstance(p, str) and os.path.isabs(p) for p in extra):
        raise ExecutorConfigError(ERR_READ_ONLY_PATHS)
    interpreters = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    client = [str(PLATFORM_ROOT / name) for name in AGENT_CLIENT_FILES]
    return [path for path in [*sorted(interpreters), *client, *extra] if os.path.exists(path)]


def bwrap_argv(argv, *, workspace, home, profile, share_net=True, extra_args=()):
    """``argv`` wrapped in bwrap as the module docstring describes."""
    # Not --new-session: the agent stays in the process group the executor
    # signals (interrupt, kill); it has no terminal to push input into.
    args = [shutil.which(BWRAP) or BWRAP, "--unshare-all", "--die-with-parent"]
    if share_net:
        args.append("--share-net")
    if os.geteuid() == 0:
        # Root outside keeps no capability inside (without a user namespace
        # of its own it would still be root over every bound path).
        args += ["--cap-drop", "ALL"]
    args += ["--ro-bind", "/usr", "/usr"]
    for name in TOP_LEVEL_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in _read_only_paths(profile):
        args += ["--ro-bind", path, path]
    args += list(extra_args)
    args += ["--bind", str(workspace), str(workspace), "--bind", str(home), str(home), "--chdir", str(workspace)]
    return [*args, "--", *argv]


@dataclass
class SandboxedRun:
    """How to start the agent; :meth:`close` once it has ended."""

    argv: list
    env: dict
    relay: ApiRelay | None = None
    relay_dir: str = ""

    def close(self):
        if self.relay is not None:
            self.relay.close()
            shutil.rmtree(self.relay_dir, ignore_errors=True)
            self.relay = None


def sandboxed(argv, *, context, env):
    """``argv`` and ``env`` as the agent runs them: unchanged without a sandbox."""
    if not sandbox_name(context.profile):
        return SandboxedRun(argv, env)
    # The agent's own binary, checked outside: a missing one is one sentence,
    # not bwrap's execvp error.
    require_binary(argv[0], env.get("PATH"))
    bwrap_check()
    env = {**env, "TMPDIR": "/tmp"}
    options = {"workspace": context.workspace, "home": context.home, "profile": context.profile}
    if context.profile.get("network", True) or not env.get("AGENTVINE_API_URL"):
        return SandboxedRun(bwrap_argv(argv, **options), env)
    return _without_network(argv, env, options)


def _without_network(argv, env, options):
    """Its own empty network namespace; only the API is relayed (executors/api_relay.py)."""
    host, port = api_address(env["AGENTVINE_API_URL"])
    if not is_loopback_or_name(host):
        raise ExecutorConfigError(ERR_API_HOST.format(host=host))
    relay_dir = tempfile.mkdtemp(prefix="agentvine-relay-")
    hosts = Path(relay_dir) / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n::1 localhost ip6-localhost\n127.0.0.1 {host}\n")
    relay = ApiRelay(env["AGENTVINE_API_URL"], relay_dir)
    inside_socket = f"{INSIDE_DIR}/{SOCKET_NAME}"
    extra = ["--ro-bind", relay_dir, INSIDE_DIR, "--ro-bind", str(hosts), "/etc/hosts"]
    extra += ["--ro-bind", RELAY_SCRIPT, RELAY_SCRIPT]
    # The relay runs in the background (a non-interactive shell's background
    # job ignores SIGINT, and it ignores SIGTERM itself); the agent replaces
    # the shell, so it is the sandbox's main process and its exit ends all.
    inner = ["/bin/sh", "-c", '"$0" "$1" "$2" "$3" "$4" & shift 4; exec "$@"']
    inner += [sys.executable, RELAY_SCRIPT, host, str(port), inside_socket, *argv]
    argv = bwrap_argv(inner, share_net=False, extra_args=extra, **options)
    return SandboxedRun(argv, env, relay=relay, relay_dir=relay_dir)
