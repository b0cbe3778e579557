from django import forms
from django.conf import settings

from tasks_app.models import Priority, TaskStatus, TaskType


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["executor"].choices = executor_choices()

    def clean_title(self):
        title = self.cleaned_data["title"].strip()
        if not title:
            raise forms.ValidationError("Give the task a title.")
        return title

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
