"""Websocket consumer that relays the stream's verdict batches to analysts."""

from __future__ import annotations

import logging
import time

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import DatabaseError

from dashboard.selectors import session_signed_in
from detection.events import LABELS_EVENT_TYPE, VERDICTS_EVENT_TYPE, VERDICTS_GROUP
from fraudsite.permissions import READ_PERMISSION

# How often an open socket checks that its session still signs in an active user
# (the page pings every 15 s): signing out, or an admin deactivating the user,
# stops the feed within this time.
SESSION_RECHECK_SECONDS = 15.0
# Close code the page reads as "signed out" (4000-4999 are the application's).
CLOSE_SIGNED_OUT = 4401
# WebSocket's "internal error": the page reconnects, and reloads what it shows.
CLOSE_SERVER_ERROR = 1011
logger = logging.getLogger(__name__)


class VerdictsConsumer(AsyncJsonWebsocketConsumer):
    """Join the verdicts group and forward each batch event to the browser.

    The consumer is a pipe on purpose: the stream already sends at most a few
    events per second with at most 200 verdicts each, and the page applies every
    event as one DOM update.
    """

    groups: list = []

    async def dispatch(self, message):
        """Leave the verdicts group when a handler fails: Channels does not
        call `disconnect` then, and the group would keep the dead channel (and
        buffer events for it) until the group expires, a day later."""
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            await self.channel_layer.group_discard(VERDICTS_GROUP, self.channel_name)
            raise

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        """Take the page's JSON messages; ignore binary frames and text that is
        not JSON (not the page's), instead of failing the socket."""
        if text_data is None:
            return
        try:
            content = await self.decode_json(text_data)
        except ValueError:
            return
        await self.receive_json(content, **kwargs)

    async def connect(self):
        """Accept signed-in readers only (READ_PERMISSION), then join the
        verdicts group."""
        user = self.scope.get("user")
        if (
            user is None
            or not user.is_authenticated
            or not await database_sync_to_async(user.has_perm)(READ_PERMISSION)
        ):
            # Closing before accept refuses the handshake (HTTP 403).
            await self.close()
            return
        await self.channel_layer.group_add(VERDICTS_GROUP, self.channel_name)
        self._checked_at = time.monotonic()
        await self.accept()

    async def _signed_in(self) -> bool:
        """Return False, and close, once the session no longer signs the user in
        as a reader (signed out, deactivated, or the role that reads taken)."""
        if time.monotonic() - self._checked_at < SESSION_RECHECK_SECONDS:
            return True
        self._checked_at = time.monotonic()
        session = self.scope.get("session")
        try:
            still = await database_sync_to_async(session_signed_in)(
                session_key=session.session_key if session else None,
                user_id=self.scope["user"].pk,
                permission=READ_PERMISSION,
            )
        except DatabaseError as exc:
            # Not known to be signed in: close; the page reconnects when the
            # database answers again (its sign-in is checked then).
            logger.warning("websocket: session check failed, closing: %s", exc)
            await self.close(code=CLOSE_SERVER_ERROR)
            return False
        if not still:
            await self.close(code=CLOSE_SIGNED_OUT)
        return still

    async def disconnect(self, code):
        """Leave the verdicts group."""
        await self.channel_layer.group_discard(VERDICTS_GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """Answer a ping so the page can tell a live socket from a dead one."""
        is_ping = isinstance(content, dict) and content.get("type") == "ping"
        if is_ping and await self._signed_in():
            await self.send_json({"type": "pong"})

    async def verdicts_batch(self, event):
        """Forward one batch of verdicts, with its counts and its sender's rate."""
        if not await self._signed_in():
            return
        await self.send_json(
            {
                "type": VERDICTS_EVENT_TYPE,
                "verdicts": event.get("verdicts", []),
                "counts": event.get("counts", {}),
                "throughput": event.get("throughput"),
                "source": event.get("source", ""),
                "sent_at": event.get("sent_at"),
            }
        )

    async def labels_added(self, event):
        """Forward new labels: review lists mark the rows another analyst did."""
        if not await self._signed_in():
            return
        await self.send_json(
            {"type": LABELS_EVENT_TYPE, "labels": event.get("labels", [])}
        )
