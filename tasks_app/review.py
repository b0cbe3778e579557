"""The review loop of a task's results (``POST tasks/{id}/review/``).

- **Request changes**: the reviewer's comment becomes a message from them to
  the task's agent; its inbox gives the agent its next turn in the same
  session and on the same branch (``chat_app``), on whichever host runs it:
  a workspace that lacks the server's commits fetches them first
  (``GET executions/{id}/bundle/``).
- **Approve**: the task's branch is merged into its base in the server's
  repository (``tasks_app.results``), fast-forward when the base has not
  moved, else a merge commit by the platform's git identity; then pushed to
  the origin when the repository is configured for it. A conflict changes no
  branch: the task shows the conflicting files and can be handed to the
  agent as a rebase turn.
- **Open pull request** through the forge's REST API (``tasks_app.forges``).

Each decision is a ``TaskReview`` row naming who made it, and a
``task.reviewed`` live event. ``review_status`` is a second axis beside the
task's ``status``, which keeps following its run (dependants, schedules and
subtasks key on ``completed``)::

    (results arrive) ──▶ in_review ──approve──▶ merged
                            │   ╲──approve, conflict──▶ conflict ──rebase turn──▶ changes_requested
                            ╰──request changes──▶ changes_requested ──(the turn's commits arrive)──▶ in_review
"""

import base64
import fnmatch
import os
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agentvine import events
from agentvine.errors import IllegalTransition, ValidationFailed
from chat_app.services import agent_profile, message_send, operator_profile
from queue_app.models import ACTIVE_STATUSES, WorkOrder, WorkOrderStatus
from tasks_app import forges
from tasks_app.models import ReviewAction, ReviewStatus, Task, TaskReview, TaskStatus
from tasks_app.repositories import repository_url_check
from tasks_app.results import (
    GitError,
    git_environment,
    results_branch_head,
    results_repository,
    server_git,
    task_branch,
)

ERR_NOT_REVIEWABLE = "a task can be reviewed once its run has completed (it is {status})"
ERR_AGENT_WORKING = "the agent is still working on this task: review once its turn has ended"
ERR_NO_RESULTS = "the server has no commits of this task to review"
ERR_ALREADY_MERGED = "the task's branch is already merged (at {commit})"
ERR_COMMENT_REQUIRED = "say what should change"
ERR_CONFLICT = "{branch} conflicts with {base} in: {files}; nothing was merged"
ERR_NO_CONFLICT = "only a task whose merge conflicted can be handed back for a rebase"
ERR_BAD_BRANCH = "not a branch name: {branch}"
ERR_BASE_UNKNOWN = "cannot find the base branch {branch} of {url}: {detail}"
ERR_PUSH_REFUSED = "the origin refused the push of {branch}: {detail}"
ERR_PUSH_SECRET = "secret {name} (AGENTVINE_RESULTS_PUSH_SECRET) is not set on the server (set {name} or {name}_FILE)"
MAX_COMMENT_CHARS = 20000

CHANGES_MESSAGE = "Changes requested on your results:\n\n{comment}"
REBASE_MESSAGE = (
    "Approving your work failed: branch {branch} conflicts with {base} ({base_commit}) in:\n{files}\n\n"
    "Bring {base} into your branch (git fetch origin {base} && git merge FETCH_HEAD), resolve the "
    "conflicts, keep what both sides meant, and end your turn; it will be reviewed again."
)
DEFAULT_LOCAL_BASE = "main"
SSH_PASSED_THROUGH = ("SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "GIT_SSH")


def _reviewable(task):
    """Raise unless ``task``'s results can be decided on now: its run
    completed and no turn of its agent is queued or running."""
    if task.status != TaskStatus.COMPLETED:
        raise IllegalTransition(ERR_NOT_REVIEWABLE.format(status=task.get_status_display().lower()))
    pending = [WorkOrderStatus.QUEUED, *ACTIVE_STATUSES]
    if WorkOrder.objects.filter(task_id=task.pk, status__in=pending).exists():
        raise IllegalTransition(ERR_AGENT_WORKING)


def _locked(task):
    return Task.objects.select_for_update().get(pk=task.pk)


def _locked_with_results(task):
    """``(task, head)``: ``task`` locked and reviewable, and the head of its
    results' branch; IllegalTransition when it has no results yet."""
    task = _locked(task)
    _reviewable(task)
    head = results_branch_head(task)
    if head is None:
        raise IllegalTransition(ERR_NO_RESULTS)
    return task, head


def _record(task, *, user, action, outcome, head="", comment="", **fields):
    review = TaskReview.objects.create(
        task=task, action=action, comment=comment, by=user, head_commit=head or "", outcome=outcome, **fields
    )
    events.publish(
        "task.reviewed",
        {
            "task_id": str(task.pk),
            "action": action,
            "outcome": outcome,
            "by": user.get_username() if user else None,
            "review_status": task.review_status,
        },
        groups=[events.task_group(task.pk), events.ACTIVITY_GROUP],
    )
    return review


def _task_update(task, **changes):
    changes["updated_at"] = timezone.now()
    Task.objects.filter(pk=task.pk).update(**changes)
    for name, value in changes.items():
        setattr(task, name, value)


def review_request_changes(*, task, user, comment, action=ReviewAction.REQUEST_CHANGES, text=None):
    """The reviewer's ``comment`` goes to the agent as a message from them;
    the message starts the agent's next turn once this commits."""
    comment = (comment or "").strip()
    if not comment:
        raise ValidationFailed(ERR_COMMENT_REQUIRED, field="comment")
    if len(comment) > MAX_COMMENT_CHARS:
        raise ValidationFailed(f"at most {MAX_COMMENT_CHARS} characters", field="comment")
    with transaction.atomic():
        task = _locked(task)
        _reviewable(task)
        _task_update(task, review_status=ReviewStatus.CHANGES_REQUESTED)
        review = _record(
            task,
            user=user,
            action=action,
            outcome="changes_requested",
            head=results_branch_head(task),
            comment=comment,
        )
        message_send(
            sender=operator_profile(user=user),
            text=text or CHANGES_MESSAGE.format(comment=comment),
            task=task,
            recipient=agent_profile(task=task),
        )
    return task, review


def review_rebase(*, task, user):
    """Hand a conflicting merge to the agent: a turn that brings the base
    into its branch and resolves the conflicts."""
    if task.review_status != ReviewStatus.CONFLICT:
        raise IllegalTransition(ERR_NO_CONFLICT)
    last = task.reviews.filter(outcome="conflict").first()
    base = last.base_branch if last else DEFAULT_LOCAL_BASE
    files = "\n".join(f"- {path}" for path in task.merge_conflicts)
    text = REBASE_MESSAGE.format(
        branch=task_branch(task), base=base, base_commit=(last.result_commit if last else "")[:12], files=files
    )
    return review_request_changes(task=task, user=user, comment=text, action=ReviewAction.REBASE, text=text)


def _source(url):
    """The origin as git on the server reaches it (a local path made absolute)."""
    if "://" not in url and not url.startswith("git@") and Path(url).exists():
        return str(Path(url).resolve())
    return url


def _check_branch(repository, branch):
    try:
        server_git("check-ref-format", "--branch", branch, cwd=repository)
    except GitError as exc:
        raise ValidationFailed(ERR_BAD_BRANCH.format(branch=branch), field="into") from exc


def _origin_environment(url):
    """git's environment for talking to ``url``: with an HTTPS push token
    in its config variables (never on the command line nor in the remote)."""
    env = git_environment()
    # An ssh origin authenticates as the server's user: its agent or command.
    env.update({key: os.environ[key] for key in SSH_PASSED_THROUGH if os.environ.get(key)})
    name = settings.AGENTVINE_RESULTS_PUSH_SECRET
    if name and url.startswith("https://"):
        token = forges.secret_value(name)
        if token is None:
            raise IllegalTransition(ERR_PUSH_SECRET.format(name=name))
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    return env


def _origin_git(*args, cwd, url):
    return server_git(*args, cwd=cwd, env=_origin_environment(url))


def push_configured(task):
    return bool(task.repository_url) and any(
        fnmatch.fnmatchcase(task.repository_url, pattern) for pattern in settings.AGENTVINE_RESULTS_PUSH
    )


def _base_branch(task, repository, into):
    """The branch the task's work goes into, and its commit now (None when it
    does not exist yet: a task without a repository, before its first merge).
    For a repository task the origin's branch is fetched into the server's
    repository first (``refs/remotes/origin/<base>``)."""
    if not task.repository_url:
        branch = into or DEFAULT_LOCAL_BASE
        _check_branch(repository, branch)
        try:
            return branch, server_git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=repository)
        except GitError:
            return branch, None
    repository_url_check(task.repository_url)
    url = _source(task.repository_url)
    branch = into or settings.AGENTVINE_MERGE_BASE_BRANCH
    try:
        if not branch:
            symref = _origin_git("ls-remote", "--symref", "--", url, "HEAD", cwd=repository, url=url)
            first = symref.splitlines()[0] if symref else ""
            if not first.startswith("ref: refs/heads/"):
                raise GitError("the origin names no default branch")
            branch = first[len("ref: refs/heads/") :].split("\t", 1)[0]
        _check_branch(repository, branch)
        _origin_git(
            "fetch", "--quiet", "--no-tags", "--", url, f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
            cwd=repository, url=url,
        )  # fmt: skip
    except GitError as exc:
        raise IllegalTransition(ERR_BASE_UNKNOWN.format(branch=branch or "HEAD", url=url, detail=exc)) from exc
    return branch, server_git("rev-parse", f"refs/remotes/origin/{branch}", cwd=repository)


def _last_approved_head(task):
    return (
        task.reviews.filter(action=ReviewAction.APPROVE)
        .exclude(outcome="conflict")
        .values_list("head_commit", flat=True)
        .first()
    )


def _is_ancestor(repository, older, newer):
    try:
        server_git("merge-base", "--is-ancestor", older, newer, cwd=repository)
    except GitError:
        return False
    return True


def _merge(task, repository, *, head, base_branch, base_commit):
    """``(outcome, commit, conflicts)``: the commit the base branch becomes,
    made in the server's repository without a worktree (``git merge-tree``)."""
    if base_commit is None or _is_ancestor(repository, base_commit, head):
        return "fast_forward", head, []
    if _is_ancestor(repository, head, base_commit):
        return "already_merged", base_commit, []
    result = _merge_tree(repository, base_commit, head)
    if result[1]:
        return "conflict", base_commit, result[1]
    name, email = settings.AGENTVINE_GIT_AUTHOR_NAME, settings.AGENTVINE_GIT_AUTHOR_EMAIL
    message = f"Merge {task_branch(task)} into {base_branch}\n\n{task.title}"
    commit = server_git(
        "-c", f"user.name={name}", "-c", f"user.email={email}",
        "commit-tree", result[0], "-p", base_commit, "-p", head, "-m", message, cwd=repository,
    )  # fmt: skip
    return "merged", commit, []


def _merge_tree(repository, base_commit, head):
    """``(tree, conflicting paths)`` of merging ``head`` into ``base_commit``."""
    code, out = server_git(
        "merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", base_commit, head,
        cwd=repository, accept=(0, 1),
    )  # fmt: skip
    tree, *paths = out.split("\0")
    conflicts = sorted({path for path in paths if path}) if code == 1 else []
    return tree.strip(), conflicts


def _push(task, repository, *, commit, branch):
    url = _source(task.repository_url)
    try:
        _origin_git("push", "--quiet", "--", url, f"{commit}:refs/heads/{branch}", cwd=repository, url=url)
    except GitError as exc:
        raise IllegalTransition(ERR_PUSH_REFUSED.format(branch=branch, detail=exc)) from exc


def review_approve(*, task, user, into=""):
    """Merge the task's branch into its base in the server's repository (and
    push it to the origin when configured). Returns ``(task, review)``; a
    conflict is recorded (review outcome ``conflict``, the files on the task)
    and moves no branch."""
    with transaction.atomic():
        task, head = _locked_with_results(task)
        if task.review_status == ReviewStatus.MERGED and _last_approved_head(task) == head:
            raise IllegalTransition(ERR_ALREADY_MERGED.format(commit=task.merged_commit[:12]))
        repository = results_repository(task)
        base_branch, base_commit = _base_branch(task, repository, into)
        outcome, commit, conflicts = _merge(
            task, repository, head=head, base_branch=base_branch, base_commit=base_commit
        )
        if outcome == "conflict":
            _task_update(task, review_status=ReviewStatus.CONFLICT, merge_conflicts=conflicts)
            review = _record(
                task, user=user, action=ReviewAction.APPROVE, outcome=outcome, head=head,
                base_branch=base_branch, result_commit=base_commit, conflicts=conflicts,
            )  # fmt: skip
            return task, review
        pushed = push_configured(task)
        if pushed:
            # The origin first: when it refuses (its branch moved meanwhile),
            # nothing has changed here either.
            _push(task, repository, commit=commit, branch=base_branch)
        server_git("update-ref", f"refs/heads/{base_branch}", commit, cwd=repository)
        _task_update(task, review_status=ReviewStatus.MERGED, merged_commit=commit, merge_conflicts=[])
        review = _record(
            task, user=user, action=ReviewAction.APPROVE, outcome=outcome, head=head,
            base_branch=base_branch, result_commit=commit, pushed=pushed,
        )  # fmt: skip
    return task, review


def review_open_pull_request(*, task, user, into=""):
    """Open a pull request of the task's branch into its base through the
    forge's REST API (the branch is pushed first when pushing is configured)."""
    with transaction.atomic():
        task, head = _locked_with_results(task)
        repository = results_repository(task)
        branch = task_branch(task)
        if into:
            _check_branch(repository, into)
            base_branch = into
        else:
            base_branch, _ = _base_branch(task, repository, into)
        if push_configured(task):
            _push(task, repository, commit=head, branch=branch)
        last = task.executions.exclude(head_commit="").order_by("-started_at").first()
        body = f"Opened by AgentVine for {user.get_username()}.\n\n{task.description}".strip()
        if last is not None:
            files = ", ".join(entry["path"] for entry in last.changed_files[:20])
            body += f"\n\nChanged: {files}"
        url = forges.pull_request_open(
            repository_url=task.repository_url, head=branch, base=base_branch, title=task.title, body=body
        )
        _task_update(task, pull_request_url=url)
        review = _record(
            task, user=user, action=ReviewAction.OPEN_PULL_REQUEST, outcome="pull_request", head=head,
            base_branch=base_branch, pull_request_url=url,
        )  # fmt: skip
    return task, review
