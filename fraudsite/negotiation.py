"""Content negotiation that names an unknown `?format=` instead of a bare 404."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation


class StrictContentNegotiation(DefaultContentNegotiation):
    """Answer `?format=csv` (or any format no renderer of the view has) with a
    400 naming the known ones: DRF's answer is 404 "Not found.", which reads as
    if the address were wrong. The export has its own (CsvExportNegotiation)."""

    def filter_renderers(self, renderers, format):
        found = [renderer for renderer in renderers if renderer.format == format]
        if not found:
            known = ", ".join(dict.fromkeys(renderer.format for renderer in renderers))
            raise ValidationError(
                {"format": [f"Unknown format {format!r}. Known: {known}."]}
            )
        return found


class CsvExportNegotiation(StrictContentNegotiation):
    """Negotiation of a view that streams CSV itself (the transactions export).

    The CSV is the view's own streamed response, never rendered: the view's
    renderers (JSON, the browsable API) answer its errors only. `format=csv`, or
    none, asks for the CSV, with errors as Accept asks (JSON when it names no
    renderer, as `Accept: text/csv` does); `format=api` too, with errors as the
    browsable API's page (its "Extra Actions" link from the list carries
    `format=api`). Any other format is a 400: `format=json` would answer CSV.
    """

    formats = ("csv", "api")

    def filter_renderers(self, renderers, format):
        if format == "csv":
            return renderers
        if format in self.formats:
            return super().filter_renderers(renderers, format)
        known = ", ".join(self.formats)
        raise ValidationError(
            {
                "format": [
                    f"Unknown format {format!r}: the export answers CSV. "
                    f"Known: {known} (or none)."
                ]
            }
        )

    def get_accept_list(self, request):
        # The CSV goes whatever Accept says; an error, as JSON if Accept names
        # neither JSON nor HTML (`text/csv`), not a 406.
        return [*super().get_accept_list(request), "*/*"]
