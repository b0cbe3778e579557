"""The message history page and the admin's message search on PostgreSQL."""

import pytest
from django.urls import reverse

from agentvine.pagination import BigTablePaginator
from chat_app.models import ChatMessage
from chat_app.services import discord_message_receive, message_send, operator_profile
from tests.factories import make_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


def _rows(page):
    return [line for line in page.splitlines() if 'class="msgtext"' in line]


def test_history_filters_by_text_and_shows_discord_people_by_name(operator_client, operator):
    task = make_task(title="Migrate the billing job")
    me = operator_profile(user=operator)
    message_send(sender=me, text="please rebase on main first", task=task)
    message_send(sender=me, text="<b>unrelated</b> note", task=task)
    discord_message_receive(
        discord_user_id="4242", discord_username="grace", text="Rebase done?", conversation_id=str(task.id)
    )
    discord_message_receive(
        discord_user_id="4343", discord_username="linus", text="ship it", conversation_id=str(task.id)
    )

    page = operator_client.get(reverse("message-list"), {"text": "REBASE"}).content.decode()
    assert len(_rows(page)) == 2
    assert "please rebase on main first" in page and "Rebase done?" in page and "ship it" not in page
    assert "grace" in page and "2 messages" in page

    everything = operator_client.get(reverse("message-list")).content.decode()
    assert "grace" in everything and "linus" in everything and "DISCORD" not in everything
    assert "&lt;b&gt;unrelated&lt;/b&gt;" in everything and "<b>unrelated</b>" not in everything


def test_a_text_search_with_few_matches_pages_newest_first_without_gaps(operator_client, operator, monkeypatch):
    monkeypatch.setattr(BigTablePaginator, "FEW_MATCHES", 100)
    task = make_task()
    me = operator_profile(user=operator)
    for n in range(120):
        message_send(sender=me, text=f"needle {n:03d}" if n % 2 else f"hay {n:03d}", task=task)
    seen = []
    for number in (1, 2):
        page = operator_client.get(reverse("message-list"), {"text": "needle", "page": number}).content.decode()
        assert f"page {number} of 2" in page and "60 messages" in page
        seen += [line.split("needle ")[1][:3] for line in _rows(page)]
    assert seen == [f"{n:03d}" for n in range(119, 0, -2)]


def test_many_matches_are_counted_up_to_a_cap(operator_client, operator, monkeypatch):
    monkeypatch.setattr(BigTablePaginator, "COUNT_CAP", 20)
    monkeypatch.setattr(BigTablePaginator, "FEW_MATCHES", 5)
    task = make_task()
    me = operator_profile(user=operator)
    for n in range(70):
        message_send(sender=me, text=f"line {n:02d}", task=task)
    page = operator_client.get(reverse("message-list"), {"text": "line"}).content.decode()
    assert "more than 20 messages" in page
    assert [line.split("line ")[1][:2] for line in _rows(page)] == [f"{n:02d}" for n in range(69, 19, -1)]


def test_the_admin_says_more_than_the_cap_for_a_capped_count(admin_client, operator, monkeypatch):
    monkeypatch.setattr(BigTablePaginator, "COUNT_CAP", 20)
    task = make_task()
    me = operator_profile(user=operator)
    for n in range(30):
        message_send(sender=me, text=f"capped {n:02d}", task=task)
    message_send(sender=me, text="one of a kind", task=task)
    url = reverse("admin:chat_app_chatmessage_changelist")
    page = admin_client.get(url, {"q": "capped"}).content.decode()
    assert "more than 20 results" in page and "more than 20 chat messages" in page
    assert "21 results" not in page and "21 chat messages" not in page
    page = admin_client.get(url, {"q": "one of a kind"}).content.decode()
    assert "1 result" in page and "more than" not in page


def test_admin_search_matches_text_sender_names_and_conversation(admin_client, operator):
    first, second = make_task(), make_task()
    me = operator_profile(user=operator)
    message_send(sender=me, text="deploy window is friday", task=first)
    message_send(sender=me, text="nothing to see", task=second)
    discord_message_receive(
        discord_user_id="77", discord_username="hopper", text="status?", conversation_id=str(second.id)
    )
    url = reverse("admin:chat_app_chatmessage_changelist")

    def found(q):
        response = admin_client.get(url, {"q": q})
        assert response.status_code == 200
        return {m.text for m in response.context["cl"].result_list}

    assert found("FRIDAY window") == {"deploy window is friday"}
    assert found("hopper") == {"status?"}
    assert found("hopper status") == {"status?"}
    assert found("hopper friday") == set()
    assert found(str(second.id)) == {"nothing to see", "status?"}
    assert found('"window is"') == {"deploy window is friday"}
    assert ChatMessage.objects.count() == 3
