from django import forms
from django.conf import settings

from agentvine.errors import ValidationFailed
from tasks_app.models import Priority, TaskStatus, TaskType
from tasks_app.repositories import ERR_CREDENTIALS, repository_url_check


def executor_choices():
    default = settings.AGENTVINE_DEFAULT_EXECUTOR
    return [("", f"Default ({default})")] + [(name, name) for name in sorted(settings.AGENTVINE_EXECUTORS)]


class TaskCreateForm(forms.Form):
    title = forms.CharField(max_length=200, error_messages={"required": "Give the task a title."})
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False)
    task_type = forms.ChoiceField(choices=TaskType.choices, initial=TaskType.FEATURE, label="Type")
    priority = forms.ChoiceField(choices=Priority.choices, initial=Priority.NORMAL)
    repository_url = forms.CharField(max_length=500, required=False, label="Repository")
    branch_name = forms.CharField(max_length=200, required=False, label="Branch")
    executor = forms.ChoiceField(choices=(), required=False)
    budget_usd = forms.DecimalField(
        max_digits=12,
        decimal_places=4,
        min_value=0,
        required=False,
        label="Budget (US$)",
        help_text="Empty: its type's default.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["executor"].choices = executor_choices()
        default = settings.AGENTVINE_TASK_BUDGET_USD
        self.fields["budget_usd"].widget.attrs["placeholder"] = f"default: {default}" if default else "no limit"

    def clean_title(self):
        title = self.cleaned_data["title"].strip()
        if not title:
            raise forms.ValidationError("Give the task a title.")
        return title

    def clean_repository_url(self):
        url = self.cleaned_data["repository_url"].strip()
        try:
            repository_url_check(url)
        except ValidationFailed as exc:
            if exc.message == ERR_CREDENTIALS:
                # The page shows the form again: never with the secret in it.
                self.data = self.data.copy()
                self.data[self.add_prefix("repository_url")] = ""
            raise forms.ValidationError(exc.message) from None
        return url

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("branch_name") and not cleaned.get("repository_url"):
            self.add_error("repository_url", "A branch needs a repository.")
        return cleaned


class TaskFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search")
    status = forms.ChoiceField(choices=[("", "Any status"), *TaskStatus.choices], required=False)
    task_type = forms.ChoiceField(choices=[("", "Any type"), *TaskType.choices], required=False)
    priority = forms.ChoiceField(choices=[("", "Any priority"), *Priority.choices], required=False)
    sort = forms.ChoiceField(
        choices=[("", "Newest first"), ("queue", "Queue order: queued, priority then age")],
        required=False,
        label="Sort",
    )
