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
network unless the profile says ``"network": false`` (then only the API
reaches it: see :mod:`workers_app.executors.api_relay`). It runs with no
capabilities, dies with its worker, and gets only the environment the
executor built (an allowlist).

A worker where bubblewrap cannot run (not installed, no user namespaces)
fails such a profile at once with one sentence; it never runs it unsandboxed.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def sandboxed(argv, *, context, env):
    """``argv`` and ``env`` as the agent runs them: unchanged without a sandbox."""
    if not sandbox_name(context.profile):
        return argv, env
    # The agent's own binary, checked outside: a missing one is one sentence,
    # not bwrap's execvp error.
    require_binary(argv[0], env.get("PATH"))
    bwrap_check()
    env = {**env, "TMPDIR": "/tmp"}
    return bwrap_argv(argv, workspace=context.workspace, home=context.home, profile=context.profile), env
