import io

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_operator_password_is_printed_once_and_stored_nowhere(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    first, again = io.StringIO(), io.StringIO()

    call_command("ensure_operator", "--username", "first-op", stdout=first)
    call_command("ensure_operator", "--username", "first-op", stdout=again)

    password = first.getvalue().split(" / ")[1].split(" ")[0]
    assert authenticate(username="first-op", password=password) is not None
    assert password not in again.getvalue()
    assert "changepassword first-op" in again.getvalue()
    assert not any(password in path.read_text() for path in tmp_path.rglob("*") if path.is_file())
    assert list(tmp_path.iterdir()) == []
