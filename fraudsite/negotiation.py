"""Content negotiation that names an unknown `?format=` instead of a bare 404."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation


class StrictContentNegotiation(DefaultContentNegotiation):
    """Answer `?format=csv` (or any format no renderer of the view has) with a
    400 naming the known ones: DRF's answer is 404 "Not found.", which reads as
    if the address were wrong. The export is CSV whatever `format` says."""

    def filter_renderers(self, renderers, format):
        found = [renderer for renderer in renderers if renderer.format == format]
        if not found:
            known = ", ".join(dict.fromkeys(renderer.format for renderer in renderers))
            raise ValidationError(
                {"format": [f"Unknown format {format!r}. Known: {known}."]}
            )
        return found
