"""A value read from the database again only when a cheap signature changed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

_V = TypeVar("_V")


class SignatureCache(Generic[_V]):
    """Hold one computed value with the signature it was computed for.

    Scorers refresh their config every few seconds; the block/allow lists and
    the merchant fraud counts are recomputed only when their signature (a
    version counter, label counts) moved. Thread-safe; `clear` forgets it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[Hashable, _V] | None = None

    def get(self, signature: Hashable, compute: Callable[[], _V]) -> _V:
        with self._lock:
            if self._entry is not None and self._entry[0] == signature:
                return self._entry[1]
        value = compute()
        with self._lock:
            self._entry = (signature, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entry = None
