"""The verdicts websocket: who may connect, and what a logged-in analyst receives."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from tests.dashboard.conftest import message, publish_verdicts

pytestmark = pytest.mark.django_db(transaction=True)

WS_PATH = "/ws/verdicts/"
RECEIVE_TIMEOUT = 5


def _application():
    from fraudsite.asgi import application

    return application


def _headers(cookie: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return headers


async def _opened(cookie: str) -> WebsocketCommunicator:
    """Return a socket connected with this session cookie (asserted)."""
    communicator = WebsocketCommunicator(
        _application(), WS_PATH, headers=_headers(cookie)
    )
    connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT)
    assert connected
    return communicator


def _session_cookie(client, user) -> str:
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def _connects(headers: list[tuple[bytes, bytes]]) -> bool:
    """Return whether the socket accepts a connection with these headers."""

    async def scenario():
        communicator = WebsocketCommunicator(_application(), WS_PATH, headers=headers)
        connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT)
        await communicator.disconnect()
        return connected

    return async_to_sync(scenario)()


def test_anonymous_connection_is_refused(channel_layer_redis):
    """Given no session, when a browser opens the socket, then it is refused."""
    assert _connects(_headers()) is False


def test_a_user_who_may_not_read_is_refused(
    client, django_user_model, channel_layer_redis
):
    """A signed-in user without the read permission (a gateway's Scoring client
    login) gets no live verdicts; the same user made a Viewer does."""
    from django.contrib.auth.models import Group

    from detection.roles import ROLE_SCORING_CLIENT, ROLE_VIEWER

    gateway = django_user_model.objects.create_user(username="gateway")
    gateway.groups.add(Group.objects.get(name=ROLE_SCORING_CLIENT))
    assert _connects(_headers(_session_cookie(client, gateway))) is False
    gateway.groups.add(Group.objects.get(name=ROLE_VIEWER))
    assert _connects(_headers(_session_cookie(client, gateway))) is True


def test_foreign_origin_is_refused(client, staff_user, channel_layer_redis):
    """Given a logged-in session, a page on another origin still cannot connect."""
    cookie = _session_cookie(client, staff_user)
    headers = [(b"origin", b"http://evil.example"), (b"cookie", cookie.encode())]
    assert _connects(headers) is False


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://testserver:3000", "testserver"),  # another port of the same host
        ("http://testserver", "testserver:8000"),
        ("https://testserver:8443", "testserver"),
        ("null", "testserver"),  # a sandboxed or file:// page
    ],
)
def test_a_page_on_another_port_is_refused(
    client, staff_user, channel_layer_redis, origin, host
):
    """Given a logged-in session, a page served from another port of this host
    (its browser sends the session cookie to every port) cannot connect; the
    site's own origin can."""
    cookie = _session_cookie(client, staff_user)
    headers = [(b"origin", origin.encode()), (b"host", host.encode())]
    assert _connects([*headers, (b"cookie", cookie.encode())]) is False
    assert _connects(_headers(cookie)) is True


def test_same_site_origins_are_accepted():
    """The site's own origin (default ports spelled or not) and a trusted origin
    behind a proxy pass the origin check; anything else does not."""
    from fraudsite.websocket import origin_allowed

    assert origin_allowed("http://localhost:8000", "localhost:8000")
    assert origin_allowed("https://fraud.example.com", "fraud.example.com:443")
    assert origin_allowed("http://[::1]:8000", "[::1]:8000")
    assert not origin_allowed("http://localhost:8001", "localhost:8000")
    assert not origin_allowed("", "localhost:8000")
    assert not origin_allowed("http://localhost:99999", "localhost:99999")
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://fraud.example.com"]):
        assert origin_allowed("https://fraud.example.com", "10.0.0.5:8000")
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://*.example.com"]):
        assert origin_allowed("https://fraud.example.com", "10.0.0.5:8000")
        assert not origin_allowed("http://fraud.example.com", "10.0.0.5:8000")
        assert not origin_allowed("https://example.org", "10.0.0.5:8000")


def test_logged_in_client_receives_scored_verdicts(
    client, staff_user, channel_layer_redis, score
):
    """Given a logged-in analyst's socket, when transactions are scored and the
    stream publishes its batch event, then the analyst receives those verdicts."""
    cookie = _session_cookie(client, staff_user)

    async def scenario():
        communicator = await _opened(cookie)
        created = await sync_to_async(score)(
            message(user_id="ws-user", amount="25.00"),
            message(user_id="ws-user", amount="15000.00"),
        )
        await sync_to_async(publish_verdicts)(created)
        received = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)
        await communicator.disconnect()
        return created, received

    created, received = async_to_sync(scenario)()
    assert received["type"] == "verdicts.batch"
    assert [v["transaction_id"] for v in received["verdicts"]] == [
        t.transaction_id for t in sorted(created, key=lambda t: t.pk, reverse=True)
    ]
    assert received["counts"]["total"] == 2
    big = next(v for v in received["verdicts"] if v["amount"] == "15000.00")
    assert "huge_amount" in big["reason_codes"]
    assert big["status"] in {"suspicious", "fraud"}


def test_ping_is_answered(client, staff_user, channel_layer_redis):
    """Given a connected page, a ping gets a pong (the page's liveness probe)."""
    cookie = _session_cookie(client, staff_user)

    async def scenario():
        communicator = await _opened(cookie)
        await communicator.send_json_to({"type": "ping"})
        reply = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)
        await communicator.disconnect()
        return reply

    assert async_to_sync(scenario)() == {"type": "pong"}


def _closes_after(cookie: str, revoke, monkeypatch) -> dict:
    """Open the socket on `cookie`, see a ping answered, run `revoke` (sync),
    ping again and return what the socket sends then."""
    from dashboard import consumers

    monkeypatch.setattr(consumers, "SESSION_RECHECK_SECONDS", 0.0)

    async def scenario():
        communicator = await _opened(cookie)
        await communicator.send_json_to({"type": "ping"})
        assert await communicator.receive_json_from(RECEIVE_TIMEOUT) == {"type": "pong"}
        await sync_to_async(revoke)()
        await communicator.send_json_to({"type": "ping"})
        closed = await communicator.receive_output(RECEIVE_TIMEOUT)
        await communicator.disconnect()
        return closed

    return async_to_sync(scenario)()


def test_signing_out_stops_the_feed(
    client, staff_user, channel_layer_redis, monkeypatch
):
    """Given an analyst's open socket, when they sign out elsewhere (the session
    is flushed), the next ping is not answered: the socket closes as signed out
    and receives no more verdicts."""
    from dashboard import consumers

    cookie = _session_cookie(client, staff_user)
    closed = _closes_after(cookie, client.logout, monkeypatch)
    assert closed == {"type": "websocket.close", "code": consumers.CLOSE_SIGNED_OUT}


def test_losing_the_role_that_reads_stops_the_feed(
    client, django_user_model, channel_layer_redis, monkeypatch
):
    """A Viewer whose role is taken away gets no more verdicts: the open
    socket closes at its next check, as on signing out."""
    from django.contrib.auth.models import Group

    from dashboard import consumers
    from detection.roles import ROLE_VIEWER

    viewer = django_user_model.objects.create_user(username="was-viewer")
    group = Group.objects.get(name=ROLE_VIEWER)
    viewer.groups.add(group)
    cookie = _session_cookie(client, viewer)
    closed = _closes_after(cookie, lambda: viewer.groups.remove(group), monkeypatch)
    assert closed == {"type": "websocket.close", "code": consumers.CLOSE_SIGNED_OUT}


@pytest.mark.parametrize("revoke", ["password", "deactivate"])
def test_a_password_change_or_deactivation_stops_the_feed(
    client, staff_user, channel_layer_redis, monkeypatch, revoke
):
    """An admin revokes a stolen session by changing the password (or
    deactivating the account): the open socket closes at its next check."""
    from dashboard import consumers

    cookie = _session_cookie(client, staff_user)

    def revoke_access():
        if revoke == "password":
            staff_user.set_password("a-new-password-after-the-theft")
        else:
            staff_user.is_active = False
        staff_user.save()

    closed = _closes_after(cookie, revoke_access, monkeypatch)
    assert closed == {"type": "websocket.close", "code": consumers.CLOSE_SIGNED_OUT}


async def _members(layer) -> int:
    """Return how many channels the verdicts group holds in Redis."""
    from detection.events import VERDICTS_GROUP

    key = layer._group_key(VERDICTS_GROUP)
    async with layer.connection(layer.consistent_hash(VERDICTS_GROUP)) as redis:
        return await redis.zcard(key)


def _group_size(layer) -> int:
    return async_to_sync(_members)(layer)


def test_frames_that_are_not_the_pages_are_ignored(
    client, staff_user, channel_layer_redis
):
    """Binary frames and text that is not JSON failed the socket (and left it
    in the group for a day): they are ignored, and a ping is still answered."""
    cookie = _session_cookie(client, staff_user)

    async def scenario():
        communicator = await _opened(cookie)
        await communicator.send_to(text_data="not json")
        await communicator.send_to(bytes_data=b"\x00\x01")
        await communicator.send_json_to({"type": "ping"})
        reply = await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)
        await communicator.disconnect()
        return reply

    before = _group_size(channel_layer_redis)
    assert async_to_sync(scenario)() == {"type": "pong"}
    assert _group_size(channel_layer_redis) == before


def test_a_failing_socket_leaves_the_group(
    client, staff_user, channel_layer_redis, monkeypatch
):
    """A handler that fails (here the session check's database) takes the
    socket out of the verdicts group; a database error in the session check
    closes the socket as a server error, which the page reconnects from."""
    from django.db import OperationalError

    from dashboard import consumers

    cookie = _session_cookie(client, staff_user)
    before = _group_size(channel_layer_redis)

    def broken(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(consumers, "SESSION_RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(consumers, "session_signed_in", broken)

    async def closed_on_error():
        communicator = await _opened(cookie)
        await communicator.send_json_to({"type": "ping"})
        closed = await communicator.receive_output(RECEIVE_TIMEOUT)
        await communicator.disconnect()
        return closed

    assert async_to_sync(closed_on_error)() == {
        "type": "websocket.close",
        "code": consumers.CLOSE_SERVER_ERROR,
    }
    assert _group_size(channel_layer_redis) == before

    def crash(self, content, **kwargs):
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(consumers.VerdictsConsumer, "receive_json", crash)

    async def crashed():
        communicator = await _opened(cookie)
        assert await _members(channel_layer_redis) == before + 1
        await communicator.send_json_to({"type": "ping"})
        with pytest.raises(RuntimeError, match="a bug in a handler"):
            await communicator.receive_output(RECEIVE_TIMEOUT)

    async_to_sync(crashed)()
    assert _group_size(channel_layer_redis) == before
