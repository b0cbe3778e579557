"""The terminal client gets the server's repository refusals as one-line errors."""

import pytest

from tasks_app.models import Task
from tasks_app.repositories import ERR_CREDENTIALS, ERR_OPTION, ERR_REMOTE_HELPER

pytestmark = pytest.mark.e2e

TOKEN = "ghp_cliS3cretT0ken0123456789"


def test_refused_repositories_are_one_line_errors_that_never_repeat_credentials(logged_in):
    cli = logged_in

    helper = cli("tasks", "create", "Run it", "--repo", "ext::/usr/bin/id")
    option = cli("tasks", "create", "Run it", "--repo=--upload-pack=id")
    credentials = cli("tasks", "create", "Run it", "--repo", f"https://{TOKEN}@github.com/acme/app.git")

    assert (helper.code, option.code, credentials.code) == (1, 1, 1)
    assert ERR_REMOTE_HELPER in helper.err
    assert ERR_OPTION in option.err
    assert ERR_CREDENTIALS in credentials.err
    assert TOKEN not in credentials.err + credentials.out
    assert Task.objects.count() == 0
    assert cli("queue").out.strip() == "outbox is empty"
