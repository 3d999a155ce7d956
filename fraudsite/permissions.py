"""API permission classes shared by the apps."""

from __future__ import annotations

from rest_framework.permissions import BasePermission, IsAuthenticated


def permission_required(perm: str) -> list[type[BasePermission]]:
    """Return permission classes for a signed-in user holding Django's `perm`.

    Reading is open to every signed-in user; writing to the ledger (recording a
    transaction, labelling one) takes the model permission an admin grants in
    Users or Groups (superusers hold all of them).
    """

    class HasPermission(BasePermission):
        message = f"Writing here needs the {perm!r} permission (ask an admin)."

        def has_permission(self, request, view):
            return request.user.has_perm(perm)

    HasPermission.__name__ = f"HasPermission[{perm}]"
    return [IsAuthenticated, HasPermission]
