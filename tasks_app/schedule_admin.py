"""Admin of task schedules: every save goes through tasks_app.schedules, so
the beat row (django-celery-beat's PeriodicTask) follows the schedule."""

from django import forms
from django.contrib import admin

from agentvine.errors import ValidationFailed
from tasks_app import schedules
from tasks_app.models import TaskSchedule

SCHEDULE_FIELDS = ("name", "enabled", "cron", "interval_seconds", "overlap")


class TaskScheduleForm(forms.ModelForm):
    class Meta:
        model = TaskSchedule
        fields = (*SCHEDULE_FIELDS, *schedules.TEMPLATE_FIELDS)
        help_texts = {"cron": 'Five fields, e.g. "0 2 * * *" (every night at 02:00); or give an interval.'}

    def clean(self):
        data = super().clean()
        self.saved = None
        if self.errors:
            return data
        values = {name: data.get(name) for name in (*SCHEDULE_FIELDS, *schedules.TEMPLATE_FIELDS)}
        values.pop("enabled")
        try:
            # Validated here so a refusal shows on the form; written in save_model.
            schedules.schedule_check(**values)
        except ValidationFailed as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return data


@admin.register(TaskSchedule)
class TaskScheduleAdmin(admin.ModelAdmin):
    form = TaskScheduleForm
    list_display = ("name", "enabled", "cron", "interval_seconds", "overlap", "title", "runs_created", "last_tick_at")
    list_filter = ("enabled", "overlap")
    search_fields = ("name", "title")
    readonly_fields = ("last_task", "last_tick_at", "runs_created", "ticks_skipped", "run_pending", "periodic_task")

    def save_model(self, request, obj, form, change):
        values = {name: form.cleaned_data.get(name) for name in (*SCHEDULE_FIELDS, *schedules.TEMPLATE_FIELDS)}
        enabled = values.pop("enabled")
        saved = schedules.schedule_save(schedule=obj if change else None, created_by=request.user, **values)
        schedules.schedule_set_enabled(schedule=saved, enabled=enabled)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        schedules.schedule_delete(schedule=obj)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            schedules.schedule_delete(schedule=schedule)
