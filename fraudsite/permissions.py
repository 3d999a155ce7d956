"""API permission classes shared by the apps."""

from __future__ import annotations

from rest_framework.permissions import BasePermission, IsAuthenticated

# What reading the ledger takes (API, dashboard, live updates): every role but
# Scoring client holds it, so a gateway's token records payments and reads
# nothing else (a leaked one exposes no one's payments).
READ_PERMISSION = "transactions.view_transaction"


class CanRead(IsAuthenticated):
    """A signed-in user holding READ_PERMISSION (Viewer, Analyst, Risk admin)."""

    message = (
        f"Reading needs the {READ_PERMISSION!r} permission: the Viewer, Analyst "
        "or Risk admin role (ask an admin)."
    )

    def has_permission(self, request, view):
        return super().has_permission(request, view) and request.user.has_perm(
            READ_PERMISSION
        )


def permission_required(perm: str) -> list[type[BasePermission]]:
    """Return permission classes for a signed-in user holding Django's `perm`.

    Writing to the ledger (recording a transaction, labelling one) takes the
    model permission an admin grants in Users or Groups (superusers hold all of
    them); it does not take READ_PERMISSION (a gateway records, reads nothing).
    """

    class HasPermission(BasePermission):
        message = f"Writing here needs the {perm!r} permission (ask an admin)."

        def has_permission(self, request, view):
            return request.user.has_perm(perm)

    HasPermission.__name__ = f"HasPermission[{perm}]"
    return [IsAuthenticated, HasPermission]
