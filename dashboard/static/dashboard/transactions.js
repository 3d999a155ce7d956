/* Transactions page: live table (filters, sort, pages, "N new"), validation panel.
 *
 * New verdicts are prepended in one DOM update per animation frame and the table
 * is trimmed to one page, so the page stays responsive however fast the stream
 * goes. Live updates pause while the pointer or keyboard focus is in the table, on
 * a later page and under a sort other than newest first; a counter says how many
 * verdicts arrived meanwhile.
 */
"use strict";

(function () {
  const API = "/api/transactions";
  const VALIDATE_API = "/api/validate-transaction";
  const MAX_PENDING = 200;
  const wrap = document.getElementById("table-wrap");
  const tbody = document.getElementById("txn-rows");
  const form = document.getElementById("filters");
  const newButton = document.getElementById("new-count");
  const tableState = document.getElementById("table-state");
  const olderButton = document.getElementById("page-older");
  const newerButton = document.getElementById("page-newer");
  const matchCount = document.getElementById("match-count");
  const PAGE = Number(wrap.dataset.pageSize) || 50;
  const FILTER_FIELDS = ["status", "user_id", "merchant_id", "rule", "label", "min_amount", "max_amount", "time", "since", "until"];

  const state = {
    filters: {},
    ordering: "-id",
    pageIndex: 0,
    // The API cursor of the page shown when it is not the first (in the address
    // bar, so that Back, a reload and the detail page's back link return to it).
    cursor: null,
    next: null,
    previous: null,
    nextStale: false,
    shown: new Set(),
    hovering: false,
    focused: false,
    incoming: [],
    frameRequested: false,
    pending: [],
    pendingCount: 0,
    reloadOnResume: false,
    loading: 0,
    // Rows the filters select (meta.matching), and whether that was capped.
    matching: null,
    matchingCapped: false,
    // The last load was refused (a filter the API rejects, from a hand-edited
    // address): its error stays in the table and live rows stay out, since
    // the filter they would be checked against is not one.
    failed: false,
  };

  function renderMatchCount() {
    if (state.matching === null) {
      matchCount.textContent = "";
      return;
    }
    matchCount.textContent = Dash.int(state.matching) + (state.matchingCapped ? "+" : "") +
      (state.matching === 1 && !state.matchingCapped ? " transaction" : " transactions");
  }

  function matchingAdd(delta) {
    // "10,000+" stays so: past the cap the count is not known.
    if (state.matching === null || state.matchingCapped) return;
    state.matching = Math.max(0, state.matching + delta);
    renderMatchCount();
  }

  /* ---- filters ------------------------------------------------------------ */

  function filtersFromForm() {
    const filters = {};
    for (const name of FILTER_FIELDS) {
      const value = form.elements[name].value.trim();
      if (value) filters[name] = value;
    }
    return filters;
  }

  function filtersToForm(filters) {
    for (const name of FILTER_FIELDS) form.elements[name].value = filters[name] || "";
  }

  function utcParam(value) {
    // datetime-local has no zone; the form says UTC, so the API gets a "Z".
    return value.length === 16 ? value + ":00Z" : value + "Z";
  }

  function apiQuery(withCount) {
    const params = new URLSearchParams({ n: String(PAGE), ordering: state.ordering });
    if (withCount) params.set("count", "1");
    const f = state.filters;
    if (f.status === "flagged") {
      params.append("status", "suspicious");
      params.append("status", "fraud");
    } else if (f.status) {
      params.append("status", f.status);
    }
    for (const name of ["user_id", "merchant_id", "rule", "label", "min_amount", "max_amount"]) {
      if (f[name]) params.append(name, f[name]);
    }
    // "Time of: the verdict" filters by scored_at instead of the event time.
    const prefix = f.time === "scored" ? "scored_" : "";
    if (f.since) params.append(prefix + "since", utcParam(f.since));
    if (f.until) params.append(prefix + "until", utcParam(f.until));
    return API + "?" + params.toString();
  }

  function exportHref() {
    // The API's query without paging: every row the filters select, same order.
    const params = new URL(apiQuery(), location.origin).searchParams;
    params.delete("n");
    return API + "/export?" + params.toString();
  }

  function matches(verdict) {
    const f = state.filters;
    if (f.status === "flagged" && verdict.status === "legit") return false;
    if (f.status && f.status !== "flagged" && verdict.status !== f.status) return false;
    if (f.user_id && verdict.user_id !== f.user_id) return false;
    if (f.merchant_id && verdict.merchant_id !== f.merchant_id) return false;
    if (f.rule && !(verdict.reason_codes || []).includes(f.rule)) return false;
    // A verdict just scored has no label yet.
    if (f.label && f.label !== "none") return false;
    // The amount filters are in the base currency, as the API applies them.
    const amount = Number(verdict.amount_base != null ? verdict.amount_base : verdict.amount);
    if (f.min_amount && amount < Number(f.min_amount)) return false;
    if (f.max_amount && amount > Number(f.max_amount)) return false;
    const when = new Date(f.time === "scored" ? verdict.scored_at : verdict.timestamp).getTime();
    if (f.since && when < new Date(utcParam(f.since)).getTime()) return false;
    if (f.until && when >= new Date(utcParam(f.until)).getTime()) return false;
    return true;
  }

  function cursorOf(url) {
    return url ? new URL(url, location.origin).searchParams.get("cursor") : null;
  }

  function pageReset() {
    state.pageIndex = 0;
    state.cursor = null;
  }

  function syncAddressBar(push) {
    document.getElementById("export-csv").href = exportHref();
    const params = new URLSearchParams(state.filters);
    if (state.ordering !== "-id") params.set("ordering", state.ordering);
    if (state.pageIndex > 0 && state.cursor) {
      params.set("page", String(state.pageIndex + 1));
      params.set("cursor", state.cursor);
    }
    const query = params.toString();
    const address = location.pathname + (query ? "?" + query : "");
    // A page turn is a step Back can undo; a filter or sort edit replaces.
    if (push) history.pushState(null, "", address);
    else history.replaceState(null, "", address);
    try {
      // The detail page's back link returns to this view.
      sessionStorage.setItem("dash.listQuery", query);
    } catch (error) {
      // Storage may be off: the back link then shows every transaction.
    }
  }

  /* ---- rows --------------------------------------------------------------- */

  function rowFor(verdict, fresh) {
    const link = Dash.idLink(verdict.transaction_id);
    const row = Dash.el("tr", { "data-id": verdict.transaction_id, "data-status": verdict.status, class: fresh ? "fresh" : null }, [
      Dash.el("td", { class: "nowrap", title: Dash.utc(verdict.scored_at) + " UTC", text: Dash.utc(verdict.scored_at).slice(11) }),
      Dash.el("td", { class: "txn-id" }, [link]),
      Dash.el("td", { class: "nowrap", text: verdict.user_id }),
      Dash.el("td", { class: "nowrap", title: Dash.utc(verdict.timestamp) + " UTC", text: Dash.utc(verdict.timestamp).slice(5) }),
      Dash.el("td", { class: "num nowrap", "data-amount": verdict.amount, text: Dash.amount(verdict.amount) + " " + (verdict.currency || "") }),
      Dash.el("td", { text: verdict.location || "–" }),
      Dash.el("td", {}, [Dash.statusBadge(verdict.status)]),
      Dash.el("td", { class: "num", text: Number(verdict.risk_score).toFixed(3) }),
      Dash.el("td", {}, [Dash.reasonChips(verdict.reasons)]),
      Dash.el("td", { class: "label-cell" }, [Dash.labelBadge(verdict.label)]),
    ]);
    return row;
  }

  function renderRows(items) {
    state.shown = new Set(items.map((item) => item.transaction_id));
    const fragment = document.createDocumentFragment();
    for (const item of items) fragment.append(rowFor(item, false));
    if (!items.length) {
      fragment.append(Dash.el("tr", { class: "empty" }, [Dash.el("td", { colspan: "10", text: "No transactions match." })]));
    }
    tbody.replaceChildren(fragment);
  }

  function flushIncoming() {
    state.frameRequested = false;
    const fresh = [];
    for (const verdict of state.incoming) {
      if (fresh.length >= PAGE) break;
      if (state.shown.has(verdict.transaction_id)) continue;
      state.shown.add(verdict.transaction_id);
      fresh.push(verdict);
    }
    state.incoming = [];
    if (!fresh.length) return;
    const fragment = document.createDocumentFragment();
    for (const verdict of fresh) fragment.append(rowFor(verdict, true));
    const empty = tbody.querySelector("tr.empty");
    if (empty) empty.remove();
    tbody.prepend(fragment);
    // Bounded table: keep one page; the trimmed rows are on the next page.
    while (tbody.rows.length > PAGE) {
      const last = tbody.rows[tbody.rows.length - 1];
      state.shown.delete(last.dataset.id);
      last.remove();
      state.nextStale = true;
    }
    if (tbody.rows.length >= PAGE) olderButton.disabled = false;
  }

  function enqueue(verdicts) {
    state.incoming = verdicts.concat(state.incoming);
    if (!state.frameRequested) {
      state.frameRequested = true;
      requestAnimationFrame(flushIncoming);
    }
  }

  /* ---- live state ----------------------------------------------------------- */

  function pauseReason() {
    if (state.pageIndex > 0) return "showing an older page";
    if (state.ordering !== "-id") return "sorted by another column";
    if (state.hovering) return "pointer over the table";
    if (state.focused) return "reading the table";
    return "";
  }

  function renderToolbar() {
    const reason = pauseReason();
    tableState.textContent = reason ? "Live updates paused (" + reason + ")" : "Live: newest first";
    tableState.dataset.paused = reason ? "true" : "false";
    if (state.pendingCount > 0 || state.reloadOnResume) {
      newButton.hidden = false;
      newButton.textContent = state.pendingCount > 0 ? Dash.int(state.pendingCount) + " new" : "Refresh";
      newButton.setAttribute("aria-label", newButton.textContent + ": show the newest transactions");
    } else {
      newButton.hidden = true;
    }
    olderButton.disabled = !state.next && !state.nextStale;
    newerButton.disabled = state.pageIndex === 0;
  }

  function resume() {
    if (pauseReason()) {
      renderToolbar();
      return;
    }
    if (state.reloadOnResume) {
      load(null);
      return;
    }
    if (state.pending.length) enqueue(state.pending);
    state.pending = [];
    state.pendingCount = 0;
    renderToolbar();
  }

  Live.on("batch", function (event) {
    if (state.failed) return;
    const matching = (event.verdicts || []).filter(matches);
    const unfiltered = Object.keys(state.filters).length === 0;
    // Without filters the event's counts are exact; with filters only the
    // carried verdicts can be checked, so the counter is a lower bound.
    const arrived = unfiltered && event.counts ? event.counts.total || 0 : matching.length;
    if (!arrived) return;
    matchingAdd(arrived);
    if (pauseReason()) {
      state.pending = matching.concat(state.pending).slice(0, MAX_PENDING);
      state.pendingCount += arrived;
      renderToolbar();
      return;
    }
    enqueue(matching);
  });

  // A label given anywhere (another analyst, a chargeback) shows on its row at
  // once; in a "not labelled" review list the row is marked done, so two
  // analysts on one queue do not both work it.
  Live.on("labels", function (event) {
    for (const label of event.labels || []) {
      const row = tbody.querySelector('tr[data-id="' + CSS.escape(label.transaction_id) + '"]');
      if (!row) continue;
      row.querySelector(".label-cell").replaceChildren(Dash.labelBadge(label));
      if (state.filters.label === "none" && !row.classList.contains("done")) {
        matchingAdd(-1);
        row.classList.add("done");
        row.title = "Labelled by " + (label.created_by || label.source) + " since this list loaded";
      }
    }
  });

  Live.on("reconnect", function () {
    // Events sent while disconnected are gone: reload the page from the API.
    if (pauseReason()) {
      state.reloadOnResume = true;
      renderToolbar();
    } else {
      load(null);
    }
  });

  wrap.addEventListener("mouseenter", () => { state.hovering = true; renderToolbar(); });
  wrap.addEventListener("mouseleave", () => { state.hovering = false; resume(); });
  wrap.addEventListener("focusin", () => { state.focused = true; renderToolbar(); });
  wrap.addEventListener("focusout", (event) => {
    if (!wrap.contains(event.relatedTarget)) {
      state.focused = false;
      resume();
    }
  });

  /* ---- loading -------------------------------------------------------------- */

  async function load(url, counted) {
    const ticket = ++state.loading;
    wrap.setAttribute("aria-busy", "true");
    try {
      const body = await Dash.api(url || apiQuery(true));
      if (ticket !== state.loading) return;
      if (!url) pageReset();
      if (!url || counted) {
        state.matching = body.meta.matching;
        state.matchingCapped = Boolean(body.meta.matching_capped);
        renderMatchCount();
      }
      state.next = body.meta.next;
      state.previous = body.meta.previous;
      state.nextStale = false;
      state.pending = [];
      state.pendingCount = 0;
      state.reloadOnResume = false;
      state.incoming = [];
      state.failed = false;
      renderRows(body.items);
    } catch (error) {
      if (ticket !== state.loading) return;
      state.failed = true;
      state.incoming = [];
      state.matching = null;
      renderMatchCount();
      tbody.replaceChildren(Dash.el("tr", { class: "empty" }, [Dash.el("td", { colspan: "10", class: "error", role: "alert", text: "Could not load: " + Dash.errorText(error) })]));
    } finally {
      if (ticket === state.loading) wrap.removeAttribute("aria-busy");
      renderToolbar();
    }
  }

  async function older() {
    if (state.nextStale && state.pageIndex === 0) {
      // Rows streamed in since the page loaded: ask for a fresh cursor first.
      const body = await Dash.api(apiQuery());
      state.next = body.meta.next;
    }
    if (!state.next) return;
    state.pageIndex += 1;
    state.cursor = cursorOf(state.next);
    syncAddressBar(true);
    await load(state.next);
  }

  function newer() {
    if (state.pageIndex <= 1) {
      pageReset();
      syncAddressBar(true);
      load(null);
      return;
    }
    state.pageIndex -= 1;
    state.cursor = cursorOf(state.previous);
    syncAddressBar(true);
    load(state.previous);
  }

  function applyFilters() {
    state.filters = filtersFromForm();
    pageReset();
    syncAddressBar();
    load(null);
  }

  /* ---- sorting -------------------------------------------------------------- */

  function renderSortHeaders() {
    const field = state.ordering.replace(/^-/, "");
    const direction = state.ordering.startsWith("-") ? "descending" : "ascending";
    for (const th of document.querySelectorAll("#txn-table th[data-sort]")) {
      if (th.dataset.sort === field) th.setAttribute("aria-sort", direction);
      else th.removeAttribute("aria-sort");
    }
  }

  for (const th of document.querySelectorAll("#txn-table th[data-sort]")) {
    th.querySelector("button").addEventListener("click", function () {
      const field = th.dataset.sort;
      const current = state.ordering.replace(/^-/, "");
      if (current === field) {
        state.ordering = state.ordering.startsWith("-") ? field : "-" + field;
      } else {
        // Text columns start A→Z; numbers and times start with the largest.
        const ascendingFirst = ["transaction_id", "user_id", "location", "status"].includes(field);
        state.ordering = ascendingFirst ? field : "-" + field;
      }
      renderSortHeaders();
      pageReset();
      syncAddressBar();
      load(null);
    });
  }

  /* ---- wiring ----------------------------------------------------------------- */

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    applyFilters();
  });
  document.getElementById("f-reset").addEventListener("click", function () {
    // Back to the live view: every filter empty (form.reset() would restore the
    // values the page was opened with) and newest first.
    for (const field of form.elements) {
      if (field.tagName === "SELECT") field.selectedIndex = 0;
      else if (field.tagName === "INPUT" && field.type !== "checkbox") field.value = "";
    }
    state.ordering = "-id";
    renderSortHeaders();
    applyFilters();
  });
  olderButton.addEventListener("click", older);
  newerButton.addEventListener("click", newer);
  newButton.addEventListener("click", function () {
    if (state.pageIndex > 0 || state.ordering !== "-id") {
      state.ordering = "-id";
      renderSortHeaders();
      pageReset();
      syncAddressBar();
    }
    state.hovering = false;
    state.focused = false;
    load(null);
  });

  /* ---- validation panel ----------------------------------------------------- */

  const validateForm = document.getElementById("validate-form");
  // The base currency's decimals (none for JPY), for the card's figures.
  const baseDecimals = Number(validateForm.closest("[data-base-decimals]").dataset.baseDecimals);
  const result = document.getElementById("validate-result");
  const sync = document.getElementById("v-sync");
  const lookupUser = document.getElementById("v-user");
  let syncTimer = null;

  function followLookup() {
    if (!sync.checked) return;
    const user = lookupUser.value.trim();
    if (form.elements.user_id.value !== user) {
      form.elements.user_id.value = user;
      applyFilters();
    }
  }

  sync.addEventListener("change", function () {
    if (sync.checked) followLookup();
    else if (form.elements.user_id.value && form.elements.user_id.value === lookupUser.value.trim()) {
      form.elements.user_id.value = "";
      applyFilters();
    }
  });
  lookupUser.addEventListener("input", function () {
    clearTimeout(syncTimer);
    syncTimer = setTimeout(followLookup, 300);
  });

  function facts(pairs) {
    const list = Dash.el("dl", { class: "facts" });
    for (const [term, value] of pairs) {
      list.append(Dash.el("dt", { text: term }), Dash.el("dd", { text: value }));
    }
    return list;
  }

  function renderVerdict(body) {
    const reasons = Dash.el("ul", { class: "reasons-list" });
    for (const reason of body.reasons) {
      const values = Object.entries(reason.values || {})
        .filter(([, v]) => v === null || typeof v !== "object")
        .map(([k, v]) => k + " " + v)
        .join(", ");
      reasons.append(
        Dash.el("li", { "data-code": reason.code }, [
          Dash.el("strong", { text: reason.label || reason.code }),
          " ",
          Dash.el("code", { text: reason.code }),
          Dash.el("div", { text: reason.detail }),
          values ? Dash.el("div", { class: "muted", text: values }) : null,
        ])
      );
    }
    if (!body.reasons.length) reasons.append(Dash.el("li", { text: "No rule fired." }));
    const history = body.history;
    const recent = Dash.el("ul", { class: "recent-list" });
    for (const txn of history.recent_transactions.slice(0, 5)) {
      recent.append(
        Dash.el("li", {}, [
          Dash.el("a", { href: "/transactions/" + encodeURIComponent(txn.transaction_id) + "/", text: Dash.utc(txn.timestamp) }),
          " " + Dash.amount(txn.amount) + " " + (txn.currency || "") + " " + (txn.location || "") + " ",
          Dash.statusBadge(txn.status),
        ])
      );
    }
    result.replaceChildren(
      Dash.el("p", { class: "verdict-line" }, [
        Dash.statusBadge(body.status),
        " risk score ",
        Dash.el("strong", { class: "risk", text: Number(body.risk_score).toFixed(3) }),
        body.model_score === null ? "" : " · model " + Number(body.model_score).toFixed(3),
      ]),
      Dash.el("h3", { text: "Reasons" }),
      reasons,
      body.notes && body.notes.length ? Dash.el("p", { class: "muted", text: body.notes.join(" ") }) : "",
      Dash.el("h3", { text: "History of " + history.user_id }),
      facts([
        ["Transactions", Dash.int(history.transaction_count)],
        ["Typical amount", history.typical_amount ? Dash.money(history.typical_amount, baseDecimals) + " " + history.base_currency : "–"],
        ["Home", history.home_location || "unknown"],
        ["Last location", history.last_location || "unknown"],
        ["Last transaction", Dash.utc(history.last_transaction_at)],
        ["Last 10 min / 1 h / 24 h", history.count_10m + " / " + history.count_1h + " / " + history.count_24h],
        ["Spent in 24 h", Dash.money(history.amount_24h, baseDecimals) + " " + history.base_currency],
      ]),
      recent
    );
  }

  validateForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    const payload = { user_id: lookupUser.value.trim(), amount: document.getElementById("v-amount").value };
    // Empty: USD, as the API takes it. Its decimals are the currency's (JPY none).
    const currency = document.getElementById("v-currency").value.trim().toUpperCase();
    if (currency) payload.currency = currency;
    const where = document.getElementById("v-location").value.trim();
    if (where) payload.location = where;
    const when = document.getElementById("v-time").value;
    if (when) payload.timestamp = when + "Z";
    result.replaceChildren(Dash.el("p", { class: "muted", text: "Checking…" }));
    followLookup();
    try {
      renderVerdict(await Dash.api(VALIDATE_API, { method: "POST", body: payload }));
    } catch (error) {
      result.replaceChildren(Dash.el("p", { class: "error", role: "alert", text: Dash.errorText(error) }));
    }
  });

  /* ---- start -------------------------------------------------------------------- */

  function startFromAddress() {
    // Filters, sort and page from the address bar (a link, a reload, Back).
    const initial = new URLSearchParams(location.search);
    const filters = {};
    for (const name of FILTER_FIELDS) if (initial.get(name)) filters[name] = initial.get(name);
    filtersToForm(filters);
    state.filters = filters;
    state.ordering = initial.get("ordering") || "-id";
    renderSortHeaders();
    const page = Number(initial.get("page"));
    if (initial.get("cursor") && Number.isInteger(page) && page > 1) {
      state.pageIndex = page - 1;
      state.cursor = initial.get("cursor");
      syncAddressBar();
      load(apiQuery(true) + "&cursor=" + encodeURIComponent(state.cursor), true);
    } else {
      pageReset();
      syncAddressBar();
      load(null);
    }
  }

  window.addEventListener("popstate", startFromAddress);
  startFromAddress();
})();
