"""Websocket consumer that relays the stream's verdict batches to analysts."""

from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from detection.events import VERDICTS_EVENT_TYPE, VERDICTS_GROUP


class VerdictsConsumer(AsyncJsonWebsocketConsumer):
    """Join the verdicts group and forward each batch event to the browser.

    The consumer is a pipe on purpose: the stream already sends at most a few
    events per second with at most 200 verdicts each, and the page applies every
    event as one DOM update.
    """

    groups: list = []

    async def connect(self):
        """Accept logged-in users only, then join the verdicts group."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Closing before accept refuses the handshake (HTTP 403).
            await self.close()
            return
        await self.channel_layer.group_add(VERDICTS_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        """Leave the verdicts group."""
        await self.channel_layer.group_discard(VERDICTS_GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """Answer a ping so the page can tell a live socket from a dead one."""
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def verdicts_batch(self, event):
        """Forward one batch of verdicts, with its counts and its sender's rate."""
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
