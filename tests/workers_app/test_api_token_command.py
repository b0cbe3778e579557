"""manage.py api_token_create: a token an operator pastes into `agentvine login`."""

import io

import pytest
from django.core.management import CommandError, call_command

from workers_app.management.commands.api_token_create import ERR_NO_SUCH_OPERATOR
from workers_app.models import ApiToken
from workers_app.services import token_hash

pytestmark = pytest.mark.django_db


def test_prints_a_working_token_for_an_operator(operator):
    out = io.StringIO()
    call_command("api_token_create", operator.username, "--name", "laptop", stdout=out)

    key = out.getvalue().strip()
    token = ApiToken.objects.get(key_hash=token_hash(key))
    assert (token.user, token.name) == (operator, "laptop")


def test_refuses_a_user_who_is_not_an_operator(django_user_model):
    django_user_model.objects.create_user(username="visitor", password="x")

    with pytest.raises(CommandError, match=ERR_NO_SUCH_OPERATOR.format(username="visitor")):
        call_command("api_token_create", "visitor")
    assert not ApiToken.objects.exists()
