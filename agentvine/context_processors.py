from chat_app.selectors import pending_question_count


def console(request):
    """The 📬 count shown in the navigation of every operator page."""
    if not getattr(request, "user", None) or not request.user.is_authenticated or not request.user.is_staff:
        return {}

    return {
        "pending_question_count": pending_question_count(),
        "message_history_enabled": True,
        "live_event_id": getattr(request, "live_event_id", ""),
    }
