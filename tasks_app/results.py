"""The server's copy of every task's results: one bare repository per source
repository (per task for a task without one) under AGENTVINE_RESULTS_ROOT.

A run's new commits arrive as a git bundle (:func:`results_bundle_ingest`);
only the task's own branch is taken from it, and the changed files recorded
on the execution are computed here from this repository, not taken from the
worker's word. Everything git does here runs with hooks off and without the
system's or the user's config: a bundle is untrusted input, and a hostile
repository must not run code on the server.
"""

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings

from agentvine.errors import NotFound, ValidationFailed
from queue_app.outputs import execution_record_result
from tasks_app.models import ReviewStatus, Task

ERR_NOT_A_BUNDLE = "the upload is not a git bundle"
ERR_BUNDLE_REFS = "a bundle may only carry the task's branch {branch}"
ERR_BUNDLE_INCOMPLETE = "the bundle needs commits the server does not have: {detail}"
ERR_BAD_COMMIT = "not a commit id: {value}"
ERR_BASE_NOT_ANCESTOR = "base commit {base} is not an ancestor of the branch head"
ERR_BUNDLE_TOO_LARGE = "bundle larger than {limit} bytes"

GIT_TIMEOUT_SECONDS = 600
# Server-side git never runs a hook or an fsmonitor, and reads no config but
# the repository's own (which only the server writes).
SAFE_GIT = ("git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
DIFF_OPTIONS = ("--no-ext-diff", "--no-textconv", "--find-renames")


class GitError(Exception):
    pass


def git_environment():
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "HOME": str(results_root()),
        "GIT_TERMINAL_PROMPT": "0",
    }


def server_git(*args, cwd, strip=True, env=None, accept=(0,)):
    """Run git on the server; ``accept``: the exit codes that are not a failure."""
    result = subprocess.run(
        [*SAFE_GIT, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_SECONDS,
        env=env or git_environment(),
    )
    if accept != (0,):
        if result.returncode not in accept:
            raise GitError((result.stderr or "").strip() or f"git {args[0]} failed")
        return result.returncode, result.stdout
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise GitError(lines[-1] if lines else f"git {args[0]} failed")
    return result.stdout.strip() if strip else result.stdout


def results_root() -> Path:
    return Path(settings.AGENTVINE_RESULTS_ROOT)


def results_root_made() -> Path:
    root = results_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def task_branch(task):
    return task.branch_name or f"agentvine/{task.id}"


def results_repository_path(task) -> Path:
    """The bare repository holding ``task``'s branch: shared by every task on
    the same source repository."""
    key = task.repository_url or f"task:{task.id}"
    return results_root() / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.git"


def results_repository(task) -> Path:
    path = results_repository_path(task)
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        server_git("init", "--quiet", "--bare", str(path), cwd=path.parent)
        # Served read-only: git http-backend refuses pushes to it.
        server_git("config", "http.receivepack", "false", cwd=path)
    return path


def _commit_id(value):
    if not SHA.match(value or ""):
        raise ValidationFailed(ERR_BAD_COMMIT.format(value=value))
    return value


def changed_files(repository, base, head):
    """The files ``base..head`` changes in ``repository``."""
    return changed_files_parse(
        server_git("diff", *DIFF_OPTIONS, "--name-status", "-z", base, head, "--", cwd=repository),
        server_git("diff", *DIFF_OPTIONS, "--numstat", "-z", base, head, "--", cwd=repository),
    )


def changed_files_parse(name_status, numstat):
    """Changed files from ``git diff --name-status -z`` and ``--numstat -z``
    of the same range: path, old path, status letter, line counts (None for
    a binary file)."""
    statuses, counts = name_status.split("\0"), numstat.split("\0")
    files = []
    i = j = 0
    while i < len(statuses) and statuses[i]:
        status = statuses[i]
        if status[0] in "RC":
            old_path, new_path = statuses[i + 1], statuses[i + 2]
            i += 3
        else:
            old_path = new_path = statuses[i + 1]
            i += 2
        # numstat: "added\tdeleted\tpath" or, for a rename, "added\tdeleted\t" then both paths.
        added, deleted, rest = counts[j].split("\t", 2)
        j += 1 if rest else 3
        binary = added == "-"
        files.append(
            {
                "path": new_path,
                "old_path": old_path,
                "status": status[0],
                "insertions": None if binary else int(added),
                "deletions": None if binary else int(deleted),
                "binary": binary,
            }
        )
    return files


def results_bundle_ingest(*, execution, bundle_file, base_commit):
    """Take the task branch from the uploaded bundle at ``bundle_file`` into
    the server's repository and record on ``execution`` what the branch
    changes since ``base_commit``. Nothing is changed on a bad bundle."""
    task = execution.task
    branch = task_branch(task)
    ref = f"refs/heads/{branch}"
    base_commit = _commit_id(base_commit)
    repository = results_repository(task)
    try:
        heads = server_git("bundle", "list-heads", str(bundle_file), cwd=repository).splitlines()
    except GitError as exc:
        raise ValidationFailed(ERR_NOT_A_BUNDLE) from exc
    names = {line.split(" ", 1)[1] for line in heads if " " in line}
    if names != {ref}:
        raise ValidationFailed(ERR_BUNDLE_REFS.format(branch=branch))
    try:
        server_git("bundle", "verify", "--quiet", str(bundle_file), cwd=repository)
    except GitError as exc:
        raise ValidationFailed(ERR_BUNDLE_INCOMPLETE.format(detail=exc)) from exc
    # Into a private ref first: the branch moves only once base and head check out.
    incoming = f"refs/agentvine-incoming/{execution.pk}"
    server_git("fetch", "--quiet", "--no-tags", str(bundle_file), f"+{ref}:{incoming}", cwd=repository)
    try:
        head = server_git("rev-parse", "--verify", f"{incoming}^{{commit}}", cwd=repository)
        try:
            server_git("merge-base", "--is-ancestor", base_commit, head, cwd=repository)
        except GitError as exc:
            raise ValidationFailed(ERR_BASE_NOT_ANCESTOR.format(base=base_commit)) from exc
        server_git("update-ref", ref, head, cwd=repository)
    finally:
        server_git("update-ref", "-d", incoming, cwd=repository)
    files = changed_files(repository, base_commit, head)
    execution_record_result(execution=execution, base_commit=base_commit, head_commit=head, changed_files=files)
    if files:
        # New commits nobody has decided on yet (tasks_app.review).
        Task.objects.filter(pk=task.pk).update(review_status=ReviewStatus.IN_REVIEW)
    return head, files


def results_bundle_receive(*, execution, stream, base_commit):
    """:func:`results_bundle_ingest` for a bundle read from ``stream`` (an
    upload), bounded by AGENTVINE_RESULTS_MAX_BUNDLE_BYTES."""
    limit = settings.AGENTVINE_RESULTS_MAX_BUNDLE_BYTES
    results_root().mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=results_root(), suffix=".bundle") as spool:
        size = 0
        # A request without a body has no stream: an empty file, refused as no bundle.
        while stream is not None and (chunk := stream.read(1 << 20)):
            size += len(chunk)
            if size > limit:
                raise ValidationFailed(ERR_BUNDLE_TOO_LARGE.format(limit=limit))
            spool.write(chunk)
        spool.flush()
        return results_bundle_ingest(execution=execution, bundle_file=Path(spool.name), base_commit=base_commit)


# The only git services served: fetch and clone (git-upload-pack). Pushes
# (git-receive-pack) and the dumb protocol's file reads are refused.
SERVED_PATHS = ("info/refs", "git-upload-pack")
SERVED_SERVICE = "git-upload-pack"


def results_http_backend(*, task, method, git_path, query, content_type, content_encoding, body):
    """Serve ``task``'s results repository read-only through ``git
    http-backend`` (git's smart HTTP, as CGI). Returns ``(status, headers,
    chunks)`` with the pack streamed as git writes it; None for a path or
    service that is not served."""
    if git_path not in SERVED_PATHS:
        return None
    if git_path == "info/refs" and query.get("service") != SERVED_SERVICE:
        return None
    repository = results_repository(task)
    env = {
        **git_environment(),
        "GIT_PROJECT_ROOT": str(repository.parent),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{repository.name}/{git_path}",
        "REQUEST_METHOD": method,
        "QUERY_STRING": query.urlencode(),
        "CONTENT_TYPE": content_type or "",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_CONTENT_ENCODING": content_encoding or "",
        "REMOTE_USER": "operator",
        # Pushes are off in the repository's config too; this holds for any
        # repository under the root.
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "http.receivepack",
        "GIT_CONFIG_VALUE_0": "false",
        "GIT_CONFIG_KEY_1": "core.hooksPath",
        "GIT_CONFIG_VALUE_1": "/dev/null",
    }
    process = subprocess.Popen(
        ["git", "http-backend"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    # The request body is small (wants and haves); the answer is the pack.
    process.stdin.write(body)
    process.stdin.close()
    status, headers = 200, {}
    while (line := process.stdout.readline().rstrip(b"\r\n")) != b"":
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "status":
            status = int(value.strip().split(" ", 1)[0])
        else:
            headers[name.strip()] = value.strip()

    def chunks():
        try:
            while chunk := process.stdout.read(64 * 1024):
                yield chunk
        finally:
            process.stdout.close()
            process.wait(timeout=GIT_TIMEOUT_SECONDS)

    return status, headers, chunks()


ERR_NO_RESULTS = "the server has no results of this execution"


def execution_patch(*, execution):
    """The unified diff of ``execution``'s results (base..head) from the
    server's repository."""
    if not execution.head_commit or not execution.base_commit:
        raise NotFound(ERR_NO_RESULTS)
    repository = results_repository_path(execution.task)
    try:
        return server_git(
            "diff", *DIFF_OPTIONS, execution.base_commit, execution.head_commit, "--", cwd=repository, strip=False
        )
    except (GitError, FileNotFoundError) as exc:
        raise NotFound(ERR_NO_RESULTS) from exc


def results_branch_head(task):
    """The commit of ``task``'s branch in the server's repository, or None."""
    repository = results_repository_path(task)
    if not (repository / "HEAD").exists():
        return None
    try:
        ref = f"refs/heads/{task_branch(task)}^{{commit}}"
        return server_git("rev-parse", "--verify", "--quiet", ref, cwd=repository)
    except GitError:
        return None


def _known_commits(repository, commits):
    """Those of ``commits`` (ids) the server's repository holds."""
    known = []
    for commit in commits:
        if not SHA.match(commit or ""):
            raise ValidationFailed(ERR_BAD_COMMIT.format(value=commit))
        try:
            server_git("cat-file", "-e", f"{commit}^{{commit}}", cwd=repository)
        except GitError:
            continue
        known.append(commit)
    return known


def results_bundle_for(*, task, haves, destination):
    """Write ``task``'s branch as a git bundle at ``destination``, without
    the commits reachable from those of ``haves`` the server knows (what a
    worker already has): a later turn elsewhere starts from the branch.
    Returns the branch head; None when the server has no such branch. The
    bundle is not written when the worker has everything (head in ``haves``)."""
    head = results_branch_head(task)
    if head is None:
        return None
    repository = results_repository_path(task)
    known = _known_commits(repository, haves)
    if head in known:
        return head
    ref = f"refs/heads/{task_branch(task)}"
    try:
        server_git("bundle", "create", "--quiet", str(destination), ref, *(f"^{c}" for c in known), cwd=repository)
    except GitError:
        # Every commit of the branch is reachable from the haves: nothing to send.
        if Path(destination).exists():
            Path(destination).unlink()
    return head
