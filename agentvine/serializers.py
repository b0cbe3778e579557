"""Serializer bases shared by the apps' APIs."""

import copy

from rest_framework import serializers


class ModelOutputSerializer(serializers.ModelSerializer):
    """A ModelSerializer that reads its model's fields once per class.

    DRF builds a ModelSerializer's fields from the model's metadata for every
    instance, which is most of the cost of rendering one object (about half of
    a task's response). The fields a class builds depend only on the class
    (its Meta and declared fields), so they are built once and each instance
    gets a deep copy, as DRF gives each instance a copy of declared fields.
    A subclass whose fields depend on the instance (its context, say) must
    not use this base.
    """

    def get_fields(self):
        cls = type(self)
        prototypes = cls.__dict__.get("_field_prototypes")
        if prototypes is None:
            prototypes = super().get_fields()
            # Set on this class only: a subclass builds its own.
            cls._field_prototypes = prototypes
        return copy.deepcopy(prototypes)
