"""Per-task workspaces: a git worktree of the task's repository at its branch.

Each repository is cloned once per worker host into a bare cache under
``AGENTVINE_WORKSPACE_ROOT/_repos``; each task then gets its own ``git
worktree`` at ``<root>/<task id>`` on ``branch_name`` (created from the
default branch when it does not exist yet). Git refuses to check one branch
out twice, so two running agents never share a checkout. A follow-up in the
same session finds the worktree and reuses it; :func:`workspace_remove` drops
it when the session is terminated, keeping the branch (and the agent's
commits) in the cache. A task without a repository gets a git repository of
its own (an initial empty commit on its branch), so every task has a diff.

When a run ends, :func:`workspace_snapshot` commits everything in the
workspace on the task's branch and says what changed since the branch left
its base.

Worker processes on one host share the cache, so clone, fetch and worktree
changes hold an exclusive file lock on it.
"""

import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from agentvine.errors import ValidationFailed
from tasks_app.repositories import repository_url_check
from tasks_app.results import changed_files_parse
from workers_app.executors import agent_home
from workers_app.executors.base import ExecutorConfigError
from workers_app.executors.environment import PASSED_THROUGH, PASSED_THROUGH_PREFIXES

ERR_GIT_MISSING = "git is not installed on this worker"
ERR_FETCH = "cannot fetch repository {url}: {detail}"
ERR_NO_DEFAULT_BRANCH = "repository {url} has no branch to start from"
ERR_BAD_BRANCH = "invalid branch name: {branch}"
ERR_BRANCH_BUSY = "branch {branch} is already checked out in another task's workspace"
ERR_WORKTREE = "cannot create a workspace on branch {branch}: {detail}"

GIT_TIMEOUT_SECONDS = 600
logger = logging.getLogger(__name__)
# What git needs of the worker's environment to reach a repository: its
# network settings, plus the worker user's HOME and ssh agent for its keys and
# credentials. Never the platform's secrets: the repository cache is writable
# by the agents that work in its worktrees, and a config they planted could
# run a command in any git this worker starts.
GIT_PASSED_THROUGH = PASSED_THROUGH | {"HOME", "SSH_AUTH_SOCK", "GIT_SSH", "GIT_SSH_COMMAND"}
# Hooks and fsmonitor commands from the (agent-writable) cache never run.
GIT_SAFE_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
# Commits the agent makes in its worktree need an author.
GIT_IDENTITY = {"user.name": "AgentVine", "user.email": "agentvine@localhost"}
INITIAL_COMMIT_MESSAGE = "Workspace created by AgentVine"
SEED_BRANCH = "agentvine-seed"
DEFAULT_BRANCH_PREFIX = "agentvine/"
_UUID_BRANCH = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A snapshot reads the diff git itself computes: an external diff driver or a
# textconv filter named by the (agent-writable) repository never runs.
DIFF_SAFE_OPTIONS = ("--no-ext-diff", "--no-textconv", "--find-renames")


class WorkspaceError(ExecutorConfigError):
    """The workspace cannot be prepared; retrying the same task cannot fix it."""


class GitFailed(Exception):
    def __init__(self, detail):
        super().__init__(detail)
        self.detail = detail


def workspace_root() -> Path:
    return Path(settings.AGENTVINE_WORKSPACE_ROOT)


def workspace_path(task_id) -> Path:
    return workspace_root() / str(task_id)


def _git_installed():
    return _git_on(os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=8)
def _git_on(search_path):
    """Whether git is on ``search_path``: looked up once per PATH a process
    has, not at every run's start and end."""
    return shutil.which("git", path=search_path) is not None


def _git_environment():
    env = {
        name: value
        for name, value in os.environ.items()
        if name in GIT_PASSED_THROUGH or name.startswith(PASSED_THROUGH_PREFIXES)
    }
    # Never wait for a password prompt nobody will answer.
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _identity_options():
    """Author and committer of the commits the platform makes, from settings."""
    name, email = settings.AGENTVINE_GIT_AUTHOR_NAME, settings.AGENTVINE_GIT_AUTHOR_EMAIL
    return ("-c", f"user.name={name}", "-c", f"user.email={email}")


def _git(*args, cwd=None):
    try:
        result = subprocess.run(
            ["git", *GIT_SAFE_CONFIG, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            env=_git_environment(),
        )
    except FileNotFoundError as exc:
        raise WorkspaceError(ERR_GIT_MISSING) from exc
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise GitFailed(lines[-1] if lines else f"git {args[0]} failed")
    return result.stdout.strip()


def _repository_source(url):
    """Local paths work like URLs; a relative path means nothing to git in another cwd."""
    if "://" not in url and not url.startswith("git@") and Path(url).exists():
        return str(Path(url).resolve())
    return url


def _cache_path(url) -> Path:
    digest = hashlib.sha256(_repository_source(url).encode()).hexdigest()[:20]
    return workspace_root() / "_repos" / f"{digest}.git"


@contextmanager
def _locked(cache):
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sync_cache(url, cache):
    """Clone on first use, fetch every branch otherwise. Caller holds the lock."""
    source = _repository_source(url)
    try:
        if not (cache / "HEAD").exists():
            _git("init", "--quiet", "--bare", str(cache))
            _git("remote", "add", "--", "origin", source, cwd=cache)
            for key, value in GIT_IDENTITY.items():
                _git("config", key, value, cwd=cache)
        _git("fetch", "--quiet", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*", cwd=cache)
        _git("remote", "set-head", "origin", "--auto", cwd=cache)
    except GitFailed as exc:
        raise WorkspaceError(ERR_FETCH.format(url=url, detail=exc.detail)) from exc


def _ref_exists(cache, ref):
    try:
        _git("show-ref", "--verify", "--quiet", ref, cwd=cache)
    except GitFailed:
        return False
    return True


def _start_point(cache, url, branch):
    if _ref_exists(cache, f"refs/remotes/origin/{branch}"):
        return f"origin/{branch}"
    try:
        return _git("symbolic-ref", "--short", "refs/remotes/origin/HEAD", cwd=cache)
    except GitFailed as exc:
        raise WorkspaceError(ERR_NO_DEFAULT_BRANCH.format(url=url)) from exc


def task_branch(task):
    return task.branch_name or f"{DEFAULT_BRANCH_PREFIX}{task.id}"


def _local_repository_init(path, branch):
    """A workspace without a source repository becomes one of its own, with an
    empty first commit: the base every later snapshot is compared with."""
    path.mkdir(parents=True, exist_ok=True)
    if (path / ".git").exists() or not _git_installed():
        # Without git on this host the task still runs, in a plain directory.
        return
    if branch.startswith(DEFAULT_BRANCH_PREFIX) and _UUID_BRANCH.fullmatch(branch[len(DEFAULT_BRANCH_PREFIX) :]):
        pass  # the platform's own name for the branch: valid by construction
    else:
        try:
            _git("check-ref-format", "--branch", branch)
        except GitFailed as exc:
            raise WorkspaceError(ERR_BAD_BRANCH.format(branch=branch)) from exc
    try:
        directories, files, commit = _seed_repository()
        # A copy of the host's seed, then the task's branch at its commit:
        # what `git init` and an empty commit would make, without two git
        # processes per task.
        for directory in directories:
            (path / ".git" / directory).mkdir(parents=True)
        for name, content in files:
            (path / ".git" / name).write_bytes(content)
        ref = path / ".git" / "refs" / "heads" / branch
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit + "\n")
        (path / ".git" / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    except (GitFailed, OSError) as exc:
        shutil.rmtree(path / ".git", ignore_errors=True)
        detail = exc.detail if isinstance(exc, GitFailed) else str(exc)
        raise WorkspaceError(ERR_WORKTREE.format(branch=branch, detail=detail)) from exc


# The empty first commit of workspaces without a source repository, made once
# per host and identity, and read once per process: {(workspace root, name,
# email): (directories, [(file, content)], commit)}, paths relative to the
# git directory, the seed's branch left out.
_seeds = {}


def _seed_repository():
    """What a git directory holding only the empty first commit is made of,
    and that commit's id; the seed is created on first use, atomically, under
    the workspace root (on ``SEED_BRANCH``)."""
    name, email = settings.AGENTVINE_GIT_AUTHOR_NAME, settings.AGENTVINE_GIT_AUTHOR_EMAIL
    key = (str(workspace_root()), name, email)
    known = _seeds.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256(f"{name}\0{email}\0{INITIAL_COMMIT_MESSAGE}".encode()).hexdigest()[:20]
    seed = workspace_root() / "_seed" / f"{digest}.git"
    head = seed / "refs" / "heads" / SEED_BRANCH
    if not head.is_file():
        seed.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="seed-", dir=seed.parent))
        try:
            _git("init", "--quiet", "--template=", f"--initial-branch={SEED_BRANCH}", cwd=scratch)
            _git(*_identity_options(), "commit", "--quiet", "--allow-empty", "-m", INITIAL_COMMIT_MESSAGE, cwd=scratch)
            # Only what a copy needs: no reflog of the seed's branch.
            shutil.rmtree(scratch / ".git" / "logs")
            (scratch / ".git" / "COMMIT_EDITMSG").unlink()
            try:
                os.rename(scratch / ".git", seed)
            except OSError:
                if not head.is_file():  # not another process's seed, made meanwhile
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    directories, files = [], []
    for entry in sorted(seed.rglob("*")):
        name = entry.relative_to(seed)
        if entry.is_dir():
            directories.append(name)
        elif name != Path("refs", "heads", SEED_BRANCH):
            files.append((name, entry.read_bytes()))
    _seeds[key] = (directories, files, head.read_text().strip())
    return _seeds[key]


def workspace_prepare(*, task) -> Path:
    """The task's workspace, created on first use and reused afterwards."""
    path = workspace_path(task.id)
    if not task.repository_url:
        _local_repository_init(path, task_branch(task))
        return path
    if (path / ".git").is_file():
        return path
    try:
        # Checked again where it is used: the worker's own policy holds even
        # for a task created before it, or on another server's settings.
        repository_url_check(task.repository_url)
    except ValidationFailed as exc:
        raise WorkspaceError(exc.message) from None
    if not _git_installed():
        raise WorkspaceError(ERR_GIT_MISSING)
    branch = task_branch(task)
    try:
        _git("check-ref-format", "--branch", branch)
    except GitFailed as exc:
        raise WorkspaceError(ERR_BAD_BRANCH.format(branch=branch)) from exc
    cache = _cache_path(task.repository_url)
    with _locked(cache):
        _sync_cache(task.repository_url, cache)
        # A directory left by an attempt that died half way is ours to replace.
        if path.exists():
            shutil.rmtree(path)
        _git("worktree", "prune", cwd=cache)
        if _ref_exists(cache, f"refs/heads/{branch}"):
            args = ["--", str(path), branch]
        else:
            args = ["--no-track", "-b", branch, "--", str(path), _start_point(cache, task.repository_url, branch)]
        try:
            _git("worktree", "add", "--quiet", *args, cwd=cache)
        except GitFailed as exc:
            detail = exc.detail
            if "already checked out" in detail or "already used by worktree" in detail:
                raise WorkspaceError(ERR_BRANCH_BUSY.format(branch=branch)) from exc
            raise WorkspaceError(ERR_WORKTREE.format(branch=branch, detail=detail)) from exc
    return path


def workspace_remove(*, task):
    """Delete the task's workspace and its agents' HOME; its branch stays in
    the cache. True if there was a workspace."""
    shutil.rmtree(agent_home(task.id), ignore_errors=True)
    path = workspace_path(task.id)
    if not path.exists():
        return False
    cache = _cache_path(task.repository_url) if task.repository_url else None
    if cache is not None and (cache / "HEAD").exists():
        with _locked(cache):
            try:
                _git("worktree", "remove", "--force", str(path), cwd=cache)
            except GitFailed:
                shutil.rmtree(path, ignore_errors=True)
            _git("worktree", "prune", cwd=cache)
    shutil.rmtree(path, ignore_errors=True)
    return True


@dataclass(frozen=True)
class Snapshot:
    """What a run left on its task's branch."""

    base_commit: str
    head_commit: str
    # [{"path", "old_path", "status", "insertions", "deletions", "binary"}]
    files: list


def _base_commit(path, task, head):
    """Where the task's branch left its base: the source repository's branch
    of the same name when there is one, its default branch otherwise; the
    first commit of a workspace without a source repository."""
    if task.repository_url:
        branch = task_branch(task)
        for ref in (f"refs/remotes/origin/{branch}", "refs/remotes/origin/HEAD"):
            try:
                return _git("merge-base", "HEAD", ref, cwd=path)
            except GitFailed:
                continue
    elif any(head == commit for _, _, commit in _seeds.values()):
        return head  # still the empty first commit: it is its own base
    return _git("rev-list", "--max-parents=0", "HEAD", cwd=path).splitlines()[0]


def _status(path):
    """``(HEAD's commit or None, whether anything in the worktree differs
    from it)``, in one git process: what `git add --all` would stage
    (untracked files included, ignored ones not)."""
    out = _git("status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all", cwd=path)
    head, dirty = None, False
    for entry in out.split("\0"):
        if entry.startswith("# branch.oid "):
            oid = entry[len("# branch.oid ") :]
            head = None if oid == "(initial)" else oid
        elif entry and not entry.startswith("# "):
            dirty = True
    return head, dirty


def _changed_files(path, base, head):
    """Files differing between ``base`` and ``head``, renames found, with their
    line counts (None for a binary file)."""
    return changed_files_parse(
        _git("diff", *DIFF_SAFE_OPTIONS, "--name-status", "-z", base, head, "--", cwd=path),
        _git("diff", *DIFF_SAFE_OPTIONS, "--numstat", "-z", base, head, "--", cwd=path),
    )


# The whole config of a workspace's own repository. It lives inside the
# workspace, which a sandboxed agent may write: a filter driver, an include or
# a commondir planted there would make the worker's `git add` run the agent's
# command outside the sandbox, so the platform rewrites them before every use.
LOCAL_REPOSITORY_CONFIG = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
LOCAL_REPOSITORY_PLANTABLE = ("commondir", "info/attributes", "info/grafts", "objects/info/alternates")


def _local_repository_reset(path):
    """Put back the platform's config of a workspace's own repository. False
    when ``.git`` is not a plain directory (the agent replaced it)."""
    git_dir = path / ".git"
    if git_dir.is_symlink() or not git_dir.is_dir():
        logger.warning("workspace %s: .git is not a directory; not snapshotted", path)
        return False
    (git_dir / "config").write_text(LOCAL_REPOSITORY_CONFIG)
    for name in LOCAL_REPOSITORY_PLANTABLE:
        target = git_dir / name
        if target.is_symlink() or target.is_file():
            target.unlink()
    return True


def workspace_snapshot(*, task, message):
    """Commit everything in the task's workspace on its branch (``git add
    -A``, author and committer from settings, hooks off) and say what the
    branch changed since its base. None when the workspace is not a git
    repository (gone, or git missing on this host)."""
    path = workspace_path(task.id)
    if not (path / ".git").exists() or not _git_installed():
        return None
    cache = _cache_path(task.repository_url) if task.repository_url else None
    if cache is None and not _local_repository_reset(path):
        return None
    lock = _locked(cache) if cache is not None else nullcontext()
    with lock:
        head, dirty = _status(path)
        if dirty or head is None:
            _git("add", "--all", "--", ".", cwd=path)
            try:
                _git("diff", "--cached", "--quiet", cwd=path)
            except GitFailed:
                _git(*_identity_options(), "commit", "--quiet", "--no-verify", "-m", message, cwd=path)
            head = _git("rev-parse", "HEAD", cwd=path)
        base = _base_commit(path, task, head)
        # A branch still at its base changed nothing: no diff to ask git for.
        files = [] if base == head else _changed_files(path, base, head)
    return Snapshot(base_commit=base, head_commit=head, files=files)


def workspace_bundle(*, task, destination, known=None):
    """Write the task's branch as a git bundle at ``destination``: with its
    whole history, or only the commits since ``known`` (a commit the server
    has) when that is an ancestor of the branch. Returns whether the bundle
    is incremental."""
    path = workspace_path(task.id)
    branch = task_branch(task)
    if known:
        try:
            _git("merge-base", "--is-ancestor", known, branch, cwd=path)
        except GitFailed:
            known = None
    if known and _git("rev-parse", branch, cwd=path) == known:
        known = None  # nothing new since: git refuses an empty bundle
    args = [branch, f"^{known}"] if known else [branch]
    _git("bundle", "create", "--quiet", str(destination), *args, cwd=path)
    return known is not None


def workspace_head(*, task):
    """The commit the task's workspace on this host is at, or None (no
    workspace, or not a git repository)."""
    path = workspace_path(task.id)
    if not (path / ".git").exists() or not _git_installed():
        return None
    try:
        return _git("rev-parse", "--verify", "--quiet", "HEAD", cwd=path) or None
    except GitFailed:
        return None


def workspace_update_from_bundle(*, task, bundle):
    """Bring the task's workspace up to its branch as the server has it (the
    bundle of a later turn that starts on another host, or after another host
    worked on the branch). The workspace moves to the server's head when its
    own commit is behind it, or is the untouched start of a fresh workspace;
    a workspace with commits the server lacks keeps them (logged). Returns
    the workspace's head."""
    path = workspace_path(task.id)
    branch = task_branch(task)
    # Per task: worktrees of one repository share the cache's refs.
    incoming = f"refs/agentvine/server/{task.id}"
    cache = _cache_path(task.repository_url) if task.repository_url else None
    if cache is None and not _local_repository_reset(path):
        return None
    with _locked(cache) if cache is not None else nullcontext():
        _git("fetch", "--quiet", "--no-tags", str(bundle), f"+refs/heads/{branch}:{incoming}", cwd=path)
        try:
            server = _git("rev-parse", incoming, cwd=path)
            local = _git("rev-parse", "HEAD", cwd=path)
            fresh = local in {commit for _, _, commit in _seeds.values()} or _is_start_point(path, task, local)
            if local != server:
                try:
                    _git("merge-base", "--is-ancestor", local, server, cwd=path)
                    behind = True
                except GitFailed:
                    behind = False
                if behind or fresh:
                    _git("reset", "--quiet", "--hard", server, cwd=path)
                else:
                    logger.warning("workspace of task %s has commits the server lacks; kept", task.id)
        finally:
            _git("update-ref", "-d", incoming, cwd=path)
        return _git("rev-parse", "HEAD", cwd=path)


def _is_start_point(path, task, commit):
    """Whether ``commit`` is where a fresh worktree of a repository task
    starts (its origin branch, or the origin's default branch)."""
    if not task.repository_url:
        return False
    for ref in (f"refs/remotes/origin/{task_branch(task)}", "refs/remotes/origin/HEAD"):
        try:
            if _git("rev-parse", "--verify", "--quiet", ref, cwd=path) == commit:
                return True
        except GitFailed:
            continue
    return False
