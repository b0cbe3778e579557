"""The core app's one model: the live-event log (``agentvine.events`` writes it)."""

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class LiveEvent(models.Model):
    """Every published event, kept so a reconnecting client can catch up.

    Written with one INSERT inside the publishing transaction (the id is the
    cursor clients resume from) and pruned by age in bounded batches.
    ``groups`` is stored as `` g1 g2 `` (space-delimited, padded) so "events of
    group X" is one ``LIKE '% X %'`` on any database, walked from the id cursor.
    """

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=64)
    groups = models.TextField()
    payload = models.JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"#{self.id} {self.type}"

    @staticmethod
    def encode_groups(groups):
        return " " + " ".join(groups) + " "

    @property
    def group_list(self):
        return self.groups.split()
