"""Shared parts of the API's input serializers."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers

# Fields of the browsable API's own forms, never of a payload: its HTML form's
# CSRF token and its raw-data form's content and media type.
FORM_MACHINERY_FIELDS = frozenset({"csrfmiddlewaretoken", "_content", "_content_type"})


class UnknownFieldsRefused:
    """Refuse a body with a field the serializer does not have, with a 400
    naming each: a misspelt field (`{"suspicous": 0.4}`) would otherwise be
    dropped without a word and the request answered as if it applied, as a
    misspelt query parameter would (`query_params_check`).

    Read-only fields are known (a GET's body sent back is no error; they are
    ignored, as DRF does); `extra_known_fields` names others a payload may
    carry. A form body (the browsable API's) may also carry the form's own
    fields (FORM_MACHINERY_FIELDS).
    """

    extra_known_fields: frozenset[str] = frozenset()

    def unknown_fields_check(self, data) -> None:
        """Raise ValidationError naming each field of `data` not known here."""
        if not isinstance(data, Mapping):
            return  # the serializer's own "Expected a dictionary" answers it
        known = {*self.fields, *self.extra_known_fields}
        source = getattr(self, "initial_data", data)
        if hasattr(source, "getlist"):  # a form (QueryDict), not JSON
            known |= FORM_MACHINERY_FIELDS
        unknown = sorted(str(name) for name in data if name not in known)
        if unknown:
            writable = {
                name for name, field in self.fields.items() if not field.read_only
            }
            names = ", ".join(sorted(writable | self.extra_known_fields))
            message = f"Unknown field. Known: {names}."
            raise serializers.ValidationError({name: [message] for name in unknown})

    def to_internal_value(self, data):
        self.unknown_fields_check(data)
        return super().to_internal_value(data)
