"""What a task changed, read from the server's repository of its results:
per attempt (the branch as that attempt left it, recorded on its execution)
and for the task as a whole (the base of its first attempt .. the head of its
latest one). Pages and the API share these reads; the patch text itself is
always git's, from the server's own copy, never the worker's word.
"""

import subprocess
from dataclasses import dataclass, field
from urllib.parse import quote

from agentvine.errors import NotFound, ValidationFailed
from queue_app.models import Execution
from tasks_app.results import (
    DIFF_OPTIONS,
    GIT_TIMEOUT_SECONDS,
    SAFE_GIT,
    GitError,
    changed_files,
    git_environment,
    results_repository_path,
    server_git,
    task_branch,
)

ERR_NO_CHANGES_YET = "this task has no results yet: no attempt has ended with a snapshot"
ERR_NO_SUCH_ATTEMPT = "this task has no attempt {attempt} with results"
ERR_NOT_ON_SERVER = "the server does not have these commits (the worker could not send them)"

# A path given to git as a pathspec is taken literally (no glob, no magic):
# file names are the agent's, hence untrusted.
LITERAL = ":(literal)"


@dataclass
class ChangeSet:
    """One range of the task's branch: its commits and the files they change."""

    label: str
    base_commit: str
    head_commit: str
    files: list
    on_server: bool
    number: int | None = None
    execution: Execution | None = None
    insertions: int = field(init=False)
    deletions: int = field(init=False)
    binary_files: int = field(init=False)

    def __post_init__(self):
        self.insertions = sum(f["insertions"] or 0 for f in self.files)
        self.deletions = sum(f["deletions"] or 0 for f in self.files)
        self.binary_files = sum(1 for f in self.files if f["binary"])

    @property
    def key(self):
        return "task" if self.number is None else str(self.number)


@dataclass
class TaskChanges:
    task: object
    branch: str
    whole: ChangeSet | None
    attempts: list  # [ChangeSet] of the attempts that ended with a snapshot, oldest first
    attempts_total: int  # every attempt, with results or not

    def pick(self, attempt):
        """The whole task for ``attempt`` None, else attempt number ``attempt``."""
        if attempt is None:
            return self.whole
        for change_set in self.attempts:
            if change_set.number == attempt:
                return change_set
        raise NotFound(ERR_NO_SUCH_ATTEMPT.format(attempt=attempt))


def _present(repository, commits):
    """The subset of ``commits`` the server's repository holds (one git process)."""
    if not commits or not (repository / "HEAD").exists():
        return set()
    checked = subprocess.run(
        [*SAFE_GIT, "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        cwd=repository,
        input="\n".join(commits) + "\n",
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_SECONDS,
        env=git_environment(),
    )
    return {line.split(" ")[0] for line in checked.stdout.splitlines() if line.endswith(" commit")}


def task_changes(*, task):
    """Every attempt of ``task`` that ended with a snapshot, and the task as a
    whole. Raises NotFound when no attempt has results yet."""
    executions = list(
        Execution.objects.filter(task=task)
        .only("id", "task_id", "attempt", "status", "started_at", "base_commit", "head_commit", "changed_files")
        .order_by("started_at", "id")
    )
    numbered = [(n, e) for n, e in enumerate(executions, start=1) if e.head_commit and e.base_commit]
    if not numbered:
        raise NotFound(ERR_NO_CHANGES_YET)
    repository = results_repository_path(task)
    present = _present(repository, sorted({e.head_commit for _, e in numbered} | {numbered[0][1].base_commit}))
    attempts = [
        ChangeSet(
            label=f"attempt {n}",
            number=n,
            execution=e,
            base_commit=e.base_commit,
            head_commit=e.head_commit,
            files=e.changed_files or [],
            on_server=e.head_commit in present,
        )
        for n, e in numbered
    ]
    first, latest = attempts[0], attempts[-1]
    if first.base_commit == latest.base_commit:
        # The usual case: every attempt built on the same base, so the latest
        # attempt's record already is the whole task's file list.
        whole_files, on_server = latest.files, latest.on_server
    else:
        on_server = latest.on_server and first.base_commit in present
        whole_files = changed_files(repository, first.base_commit, latest.head_commit) if on_server else []
    whole = ChangeSet(
        label="whole task",
        base_commit=first.base_commit,
        head_commit=latest.head_commit,
        files=whole_files,
        on_server=on_server,
    )
    return TaskChanges(
        task=task, branch=task_branch(task), whole=whole, attempts=attempts, attempts_total=len(executions)
    )


def change_set_patch(*, task, change_set, files=None):
    """The unified diff of ``change_set`` from the server's repository; only
    of ``files`` (entries of its file list) when given."""
    if not change_set.on_server:
        raise NotFound(ERR_NOT_ON_SERVER)
    paths = []
    for entry in files or ():
        paths.append(LITERAL + entry["path"])
        if entry["old_path"] != entry["path"]:
            paths.append(LITERAL + entry["old_path"])
    if files is not None and not paths:
        return ""
    try:
        return server_git(
            "-c",
            "core.quotePath=false",
            "diff",
            *DIFF_OPTIONS,
            change_set.base_commit,
            change_set.head_commit,
            "--",
            *paths,
            cwd=results_repository_path(task),
            strip=False,
        )
    except (GitError, FileNotFoundError) as exc:
        raise NotFound(ERR_NOT_ON_SERVER) from exc


def attempt_number(value):
    """``?attempt=`` of a request: None (the whole task) or a positive number."""
    if value in (None, "", "task"):
        return None
    if not str(value).isdigit() or int(value) < 1:
        raise ValidationFailed(ERR_NO_SUCH_ATTEMPT.format(attempt=str(value)[:20]), field="attempt")
    return int(value)


def _forge_repository(url):
    """``(kind, host, "owner/repo")`` of a GitHub, GitLab or Gitea-style origin
    given as https, ssh:// or git@host:path; None for anything else."""
    url = (url or "").strip()
    if url.startswith(("https://", "http://", "ssh://")):
        rest = url.split("://", 1)[1]
        host, _, path = rest.partition("/")
        host = host.rpartition("@")[2].split(":", 1)[0]  # no credentials, no port
    elif "@" in url and ":" in url.split("@", 1)[1] and "/" not in url.split(":", 1)[0]:
        host, _, path = url.split("@", 1)[1].partition(":")
    else:
        return None
    path = path.strip("/")
    path = path[: -len(".git")] if path.endswith(".git") else path
    host = host.lower()
    if not host or path.count("/") < 1 or any(part in ("", ".", "..") for part in path.split("/")):
        return None
    if host == "github.com" or host.startswith("github."):
        kind = "github"
    elif "gitlab" in host:
        kind = "gitlab"
    elif any(name in host for name in ("gitea", "forgejo", "codeberg")):
        kind = "gitea"
    else:
        return None
    return kind, host, path


COMPARE_PATHS = {"github": "compare", "gitlab": "-/compare", "gitea": "compare"}


def compare_url(*, repository_url, base_commit, branch):
    """The origin's page comparing the task branch with its base, for
    GitHub, GitLab and Gitea/Forgejo-style hosts (https or git@ origins)."""
    found = _forge_repository(repository_url)
    if found is None or not base_commit:
        return None
    kind, host, path = found
    return f"https://{host}/{quote(path)}/{COMPARE_PATHS[kind]}/{quote(base_commit)}...{quote(branch, safe='/')}"
