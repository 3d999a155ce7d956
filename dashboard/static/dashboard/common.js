/* Shared helpers of the dashboard pages: formatting, DOM building, API calls. */
"use strict";

window.Dash = (function () {
  const STATUS = {
    legit: { label: "Legit", mark: "✓" },
    suspicious: { label: "Suspicious", mark: "!" },
    fraud: { label: "Fraud", mark: "✕" },
  };
  const integer = new Intl.NumberFormat("en-US");
  // Grouped, with a currency's decimals (2 unless told: 0 for a yen base).
  const moneyFormats = new Map();
  function money(n, digits = 2) {
    if (!moneyFormats.has(digits)) {
      moneyFormats.set(digits, new Intl.NumberFormat("en-US", {
        minimumFractionDigits: digits,
        maximumFractionDigits: digits,
      }));
    }
    return moneyFormats.get(digits).format(Number(n));
  }

  // A payment's own amount as the API and the live events send it: a decimal
  // string with its currency's decimals ("12.50" USD, "12.345" KWD, "100"
  // JPY). Grouped, with exactly those decimals: money() would show 2 for all.
  function amount(text) {
    const [whole, fraction] = String(text).split(".");
    return integer.format(BigInt(whole || "0")) + (fraction ? "." + fraction : "");
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children || []) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(child));
    }
    return node;
  }

  function statusBadge(status) {
    const info = STATUS[status] || { label: status, mark: "?" };
    // The mark and the word carry the status; colour only reinforces it.
    return el("span", { class: "badge status-" + status }, [
      el("span", { class: "status-mark", "aria-hidden": "true", text: info.mark }),
      " " + info.label,
    ]);
  }

  function reasonTip(reason) {
    // Lists (the model's unusual features) are spelt out in the detail.
    const values = Object.entries(reason.values || {})
      .filter(([, value]) => value === null || typeof value !== "object")
      .map(([key, value]) => key + ": " + value)
      .join("\n");
    return (reason.detail || reason.code) + (values ? "\n" + values : "");
  }

  function reasonChips(reasons) {
    const wrap = el("span", { class: "reasons" });
    if (!reasons || !reasons.length) {
      wrap.append(el("span", { class: "muted", text: "–" }));
      return wrap;
    }
    for (const reason of reasons) {
      const tip = reasonTip(reason);
      // Focusable so keyboard users get the same tooltip as mouse users.
      wrap.append(
        el("span", {
          class: "reason",
          tabindex: "0",
          title: tip,
          "data-tip": tip,
          "data-code": reason.code,
          text: reason.label || reason.code,
        })
      );
    }
    return wrap;
  }

  function labelBadge(label) {
    if (!label) return el("span", { class: "muted", text: "–" });
    const text = label.is_fraud ? "Confirmed fraud" : "Legitimate";
    const who = label.created_by || label.source;
    return el("span", {
      class: "badge label-" + (label.is_fraud ? "fraud" : "legit"),
      title: who + (label.note ? ": " + label.note : ""),
      text: text,
    });
  }

  function utc(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    if (isNaN(date)) return iso;
    return date.toISOString().slice(0, 19).replace("T", " ");
  }

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function api(url, options) {
    const init = Object.assign(
      { headers: { Accept: "application/json" }, credentials: "same-origin" },
      options || {}
    );
    if (init.body && typeof init.body !== "string") {
      init.body = JSON.stringify(init.body);
      init.headers["Content-Type"] = "application/json";
    }
    // Every unsafe method needs the token (a DELETE has no body), and says it
    // comes from the dashboard (the audit log's wording, detection.views).
    if (init.method && init.method.toUpperCase() !== "GET") {
      init.headers["X-CSRFToken"] = csrfToken();
      init.headers["X-Fraudsite-Client"] = "dashboard";
    }
    const response = await fetch(url, init);
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (response.status === 401) {
      // The session expired or was signed out elsewhere: go to the login page.
      window.location.assign("/accounts/login/?next=" + encodeURIComponent(location.pathname));
    }
    if (!response.ok) {
      const failure = new Error("HTTP " + response.status);
      failure.status = response.status;
      failure.body = body;
      throw failure;
    }
    return body;
  }

  function errorText(error) {
    if (error && error.body && typeof error.body === "object") {
      return Object.entries(error.body)
        .map(([key, value]) => key + ": " + [].concat(value).join(" "))
        .join("; ");
    }
    return error && error.message ? error.message : String(error);
  }

  // Long ids share their start (st-1-...): keep the start and the end, which
  // tells rows apart; the full id is the link's title and accessible name.
  function idLink(id) {
    // Ids of one feed share their start (st-7-1796004973-…): the end tells rows
    // apart, so that is what fits the column; the full id is the title.
    const short = id.length > 12 ? "\u2026" + id.slice(-10) : id;
    return el("a", {
      href: "/transactions/" + encodeURIComponent(id) + "/",
      text: short,
      title: id,
      "aria-label": id,
    });
  }

  return {
    STATUS,
    el,
    idLink,
    statusBadge,
    reasonChips,
    labelBadge,
    utc,
    api,
    errorText,
    csrfToken,
    int: (n) => integer.format(n || 0),
    money,
    amount,
  };
})();
