from chat_app.selectors import pending_questions_newest


def console(request):
    """The 📬 count shown in the navigation of every operator page, with the
    newest questions' ids and tasks (static/agentvine/live.js notifies of new ones)."""
    if not getattr(request, "user", None) or not request.user.is_authenticated or not request.user.is_staff:
        return {}

    count, newest = pending_questions_newest()
    return {
        "pending_question_count": count,
        "pending_questions_newest": newest,
        "message_history_enabled": True,
        "live_event_id": getattr(request, "live_event_id", ""),
    }
