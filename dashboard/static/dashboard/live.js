/* The live connection: one websocket per page, reconnect with backoff, status.
 *
 * Pages subscribe with Live.on("batch", fn) for each verdicts event and
 * Live.on("reconnect", fn) to catch up from the API after an outage.
 */
"use strict";

window.Live = (function () {
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  // A ping every 15 s; no message for 40 s means a dead (half-open) connection.
  const PING_EVERY_MS = 15000;
  const SILENCE_LIMIT_MS = 40000;
  const handlers = { batch: [], labels: [], reconnect: [], state: [] };
  const box = document.getElementById("live-status");
  let socket = null;
  let state = "connecting";
  let attempt = 0;
  let everConnected = false;
  let retryAt = null;
  let retryTimer = null;
  let lastEventAt = null;
  // Each consumer (and web server) reports its own rate; the stream's is the sum
  // over the sources heard from lately.
  const rates = new Map();
  const RATE_FRESH_MS = 10000;
  let lastMessageAt = 0;

  function emit(name, payload) {
    for (const fn of handlers[name]) {
      try {
        fn(payload);
      } catch (error) {
        console.error(error);
      }
    }
  }

  function ago(ms) {
    const seconds = Math.max(0, Math.round(ms / 1000));
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    return Math.floor(seconds / 3600) + " h ago";
  }

  function render() {
    if (!box) return;
    const text = box.querySelector(".live-text");
    const detail = box.querySelector(".live-detail");
    box.dataset.state = state;
    if (state === "connected") text.textContent = "Connected";
    else if (state === "offline") text.textContent = "Offline";
    else if (state === "reconnecting") text.textContent = "Reconnecting…";
    else text.textContent = "Connecting…";
    const parts = [];
    if (state === "offline" && retryAt) {
      parts.push("retry in " + Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) + " s");
    }
    parts.push(lastEventAt ? "last event " + ago(Date.now() - lastEventAt) : "no events yet");
    if (rates.size && state === "connected") {
      // A quiet source sends nothing: after 10 s without its events it counts 0.
      const now = Date.now();
      let total = 0;
      for (const [source, heard] of rates) {
        if (now - heard.at > RATE_FRESH_MS) rates.delete(source);
        else total += heard.rate;
      }
      parts.push(total.toLocaleString("en-US", { maximumFractionDigits: 1 }) + " tx/s");
    }
    detail.textContent = parts.join(" · ");
  }

  function setState(next) {
    state = next;
    render();
    emit("state", state);
  }

  function url() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + location.host + "/ws/verdicts/";
  }

  function scheduleRetry() {
    attempt += 1;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (attempt - 1));
    // Jitter spreads the reconnects of many analysts after a server restart.
    const delay = base / 2 + Math.random() * (base / 2);
    retryAt = Date.now() + delay;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function connect() {
    retryAt = null;
    setState(everConnected || attempt ? "reconnecting" : "connecting");
    try {
      socket = new WebSocket(url());
    } catch (error) {
      setState("offline");
      scheduleRetry();
      return;
    }
    socket.onopen = function () {
      attempt = 0;
      lastMessageAt = Date.now();
      const catchUp = everConnected;
      everConnected = true;
      setState("connected");
      if (catchUp) emit("reconnect");
    };
    socket.onmessage = function (message) {
      lastMessageAt = Date.now();
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (event.type === "labels.added") {
        emit("labels", event);
        return;
      }
      if (event.type !== "verdicts.batch") return;
      lastEventAt = Date.now();
      if (typeof event.throughput === "number") {
        rates.set(String(event.source || ""), { rate: event.throughput, at: lastEventAt });
      }
      render();
      emit("batch", event);
    };
    // An expired session also ends here (the handshake is refused): the backoff
    // keeps those retries rare, and the next page load goes to the login page.
    socket.onclose = function (closing) {
      socket = null;
      if (closing.code === 4401) {
        // Signed out (here or in another tab) or deactivated: go to the login.
        window.location.assign("/accounts/login/?next=" + encodeURIComponent(location.pathname));
        return;
      }
      setState("offline");
      scheduleRetry();
    };
  }

  window.addEventListener("offline", function () {
    if (socket) socket.close();
  });
  window.addEventListener("online", function () {
    if (!socket) {
      attempt = 0;
      clearTimeout(retryTimer);
      connect();
    }
  });
  setInterval(render, 1000);
  setInterval(function () {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastMessageAt > SILENCE_LIMIT_MS) {
      socket.close();
      return;
    }
    socket.send(JSON.stringify({ type: "ping" }));
  }, PING_EVERY_MS);
  connect();

  return {
    on(name, fn) {
      handlers[name].push(fn);
    },
    get state() {
      return state;
    },
  };
})();
