/* Overview: totals, status donut and per-minute chart, kept live by Live events. */
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const STATUSES = ["legit", "suspicious", "fraud"];
  const data = JSON.parse(document.getElementById("overview-data").textContent);
  let totals = {
    total: data.totals.total,
    legit: data.totals.by_status.legit,
    suspicious: data.totals.by_status.suspicious,
    fraud: data.totals.by_status.fraud,
  };
  let series = data.per_minute.map((row) => ({
    minute: new Date(row.minute).getTime(),
    total: row.total,
    flagged: row.flagged,
  }));
  let frameRequested = false;
  const FLAGGED_ROWS = 8;
  const flaggedBody = document.getElementById("flagged-rows");
  let flagged = [];
  let flaggedChanged = false;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) {
      const title = document.createElementNS(SVG, "title");
      title.textContent = text;
      node.append(title);
    }
    return node;
  }

  function percent(part, whole) {
    if (!whole) return "0%";
    const share = (100 * part) / whole;
    // A few fraud verdicts among thousands are not "0.0%".
    if (part > 0 && share < 0.1) return "<0.1%";
    return share.toFixed(1) + "%";
  }

  function renderTotals() {
    const flagged = totals.suspicious + totals.fraud;
    const set = (id, value, text) => {
      const node = document.getElementById(id);
      node.dataset.value = value;
      node.textContent = text;
    };
    set("total-all", totals.total, Dash.int(totals.total));
    for (const status of STATUSES) {
      set("total-" + status, totals[status], Dash.int(totals[status]));
    }
    const rate = totals.total ? flagged / totals.total : 0;
    set("total-flagged-rate", rate.toFixed(6), percent(flagged, totals.total));
  }

  function renderDonut() {
    const donut = document.getElementById("donut");
    const legend = document.getElementById("donut-legend");
    const radius = 46;
    const circumference = 2 * Math.PI * radius;
    const nodes = [document.getElementById("donut-desc")];
    nodes.push(svg("circle", { cx: 60, cy: 60, r: radius, class: "donut-track" }));
    let offset = 0;
    const items = [];
    for (const status of STATUSES) {
      const count = totals[status];
      const share = totals.total ? count / totals.total : 0;
      const text = Dash.STATUS[status].label + ": " + Dash.int(count) + " (" + percent(count, totals.total) + ")";
      items.push(text);
      if (share > 0) {
        nodes.push(
          svg(
            "circle",
            {
              cx: 60,
              cy: 60,
              r: radius,
              class: "donut-slice status-" + status,
              "data-status": status,
              "data-count": count,
              "stroke-dasharray": share * circumference + " " + circumference,
              "stroke-dashoffset": -offset * circumference,
              transform: "rotate(-90 60 60)",
            },
            text
          )
        );
      }
      offset += share;
    }
    nodes.push(svg("text", { x: 60, y: 58, class: "donut-total" }));
    nodes[nodes.length - 1].textContent = Dash.int(totals.total);
    nodes.push(svg("text", { x: 60, y: 72, class: "donut-caption" }));
    nodes[nodes.length - 1].textContent = "transactions";
    document.getElementById("donut-desc").textContent = "Status distribution. " + items.join("; ");
    donut.replaceChildren(...nodes);
    legend.replaceChildren(
      ...STATUSES.map((status) =>
        Dash.el("li", { "data-status": status }, [
          Dash.el("span", { class: "swatch status-" + status, "aria-hidden": "true" }),
          Dash.el("span", { class: "status-mark", "aria-hidden": "true", text: Dash.STATUS[status].mark }),
          " " + Dash.STATUS[status].label + " ",
          Dash.el("strong", { class: "legend-count", text: Dash.int(totals[status]) }),
          " (" + percent(totals[status], totals.total) + ")",
        ])
      )
    );
  }

  function renderChart() {
    const chart = document.getElementById("per-minute");
    const width = 720, height = 220, left = 44, bottom = 24, top = 10;
    const plotWidth = width - left - 8, plotHeight = height - bottom - top;
    // Minutes far above the rest (a backfill: make run's first-run history,
    // ingest_file) would flatten every other minute: above 4 times the median
    // minute (the current one, still filling, left out), bars are drawn
    // clipped, their figures in their tooltips, and the scale fits the rest.
    // With fewer than 3 settled minutes (make run's first minutes: the history
    // minute and the live one), the current minute counts too, projected to a
    // whole minute at its pace so far, and the lower median is taken.
    const totals = series.map((row) => row.total);
    const settled = totals.slice(0, -1).filter((n) => n > 0).sort((a, b) => a - b);
    const current = totals[totals.length - 1] || 0;
    let median = Infinity;
    if (settled.length >= 3) {
      median = settled[Math.floor(settled.length / 2)];
    } else if (settled.length >= 1 && current > 0) {
      const elapsed = Math.max(5, new Date().getUTCSeconds());
      const basis = settled.concat([(current * 60) / elapsed]).sort((a, b) => a - b);
      median = basis[Math.floor((basis.length - 1) / 2)];
    }
    const inRange = totals.filter((n) => n <= 4 * median);
    const clipping = inRange.length < totals.length;
    const peak = Math.max(1, clipping ? Math.ceil(Math.max(...inRange) * 1.25) : Math.max(...totals));
    const step = plotWidth / series.length;
    const nodes = [document.getElementById("chart-desc")];
    for (const tick of [0, 0.5, 1]) {
      const y = top + plotHeight * (1 - tick);
      nodes.push(svg("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }));
      const label = svg("text", { x: left - 6, y: y + 4, class: "axis-label end" });
      label.textContent = Dash.int(Math.round(peak * tick));
      nodes.push(label);
    }
    series.forEach((row, index) => {
      const x = left + index * step;
      const when = new Date(row.minute).toISOString().slice(11, 16);
      const clipped = row.total > peak;
      const tip = when + " UTC: " + Dash.int(row.total) + " transactions, " + Dash.int(row.flagged) + " flagged" + (clipped ? " (bar clipped)" : "");
      const totalHeight = (plotHeight * Math.min(row.total, peak)) / peak;
      const flaggedHeight = (plotHeight * Math.min(row.flagged, peak)) / peak;
      nodes.push(svg("rect", { x: x + 1, y: top + plotHeight - totalHeight, width: Math.max(1, step - 2), height: totalHeight, class: clipped ? "bar-total clipped" : "bar-total" }, tip));
      nodes.push(svg("rect", { x: x + 1, y: top + plotHeight - flaggedHeight, width: Math.max(1, step - 2), height: flaggedHeight, class: "bar-flagged" }, tip));
      if (index % 10 === 0 || index === series.length - 1) {
        const label = svg("text", { x: x + step / 2, y: height - 6, class: "axis-label middle" });
        label.textContent = when;
        nodes.push(label);
      }
    });
    const sum = series.reduce((acc, row) => acc + row.total, 0);
    const flagged = series.reduce((acc, row) => acc + row.flagged, 0);
    document.getElementById("chart-desc").textContent =
      "Last hour: " + Dash.int(sum) + " transactions, " + Dash.int(flagged) + " flagged.";
    chart.replaceChildren(...nodes);
  }

  function renderFlagged() {
    if (!flaggedChanged) return;
    flaggedChanged = false;
    const rows = flagged.map((v) =>
      Dash.el("tr", { "data-id": v.transaction_id }, [
        Dash.el("td", { class: "nowrap", text: Dash.utc(v.scored_at).slice(11) }),
        Dash.el("td", { class: "txn-id" }, [
          Dash.idLink(v.transaction_id),
        ]),
        Dash.el("td", { text: v.user_id }),
        Dash.el("td", { class: "num nowrap", text: Dash.amount(v.amount) + " " + (v.currency || "") }),
        Dash.el("td", { text: v.location || "–" }),
        Dash.el("td", {}, [Dash.statusBadge(v.status)]),
        Dash.el("td", { class: "num", text: Number(v.risk_score).toFixed(3) }),
        Dash.el("td", {}, [Dash.reasonChips(v.reasons)]),
      ])
    );
    if (!rows.length) {
      rows.push(Dash.el("tr", {}, [Dash.el("td", { colspan: "8", class: "muted", text: "Nothing flagged yet." })]));
    }
    flaggedBody.replaceChildren(...rows);
  }

  // Flagged verdicts pushed while the feed is being (re)loaded: the response
  // may have been read before they were stored, so they go on top of it.
  let arrivedDuringLoad = null;

  async function loadFlagged() {
    arrivedDuringLoad = [];
    try {
      const body = await Dash.api(flaggedBody.dataset.url);
      const live = arrivedDuringLoad;
      const known = new Set(live.map((v) => v.transaction_id));
      flagged = live.concat(body.items.filter((v) => !known.has(v.transaction_id))).slice(0, FLAGGED_ROWS);
      flaggedChanged = true;
      schedule();
    } catch (error) {
      console.warn("flagged feed failed", error);
    } finally {
      arrivedDuringLoad = null;
    }
  }

  function render() {
    frameRequested = false;
    renderTotals();
    renderDonut();
    renderChart();
    renderFlagged();
  }

  function schedule() {
    // Events arriving within one frame are drawn together: one DOM update.
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(render);
    }
  }

  function shiftTo(minute) {
    const last = series[series.length - 1].minute;
    for (let next = last + 60000; next <= minute; next += 60000) {
      series.push({ minute: next, total: 0, flagged: 0 });
      series.shift();
    }
  }

  Live.on("batch", function (event) {
    const counts = event.counts || {};
    for (const status of STATUSES) totals[status] += counts[status] || 0;
    totals.total += counts.total || 0;
    const sent = event.sent_at ? new Date(event.sent_at).getTime() : Date.now();
    const minute = sent - (sent % 60000);
    shiftTo(minute);
    const row = series.find((item) => item.minute === minute);
    if (row) {
      row.total += counts.total || 0;
      row.flagged += (counts.suspicious || 0) + (counts.fraud || 0);
    }
    const fresh = (event.verdicts || []).filter((v) => v.status !== "legit");
    if (fresh.length && arrivedDuringLoad) arrivedDuringLoad.unshift(...fresh);
    if (fresh.length) {
      const known = new Set(fresh.map((v) => v.transaction_id));
      flagged = fresh.concat(flagged.filter((v) => !known.has(v.transaction_id))).slice(0, FLAGGED_ROWS);
      flaggedChanged = true;
    }
    schedule();
  });

  Live.on("reconnect", async function () {
    // Events sent while we were away are lost: reload the maintained figures.
    try {
      const fresh = await Dash.api(document.getElementById("totals").dataset.refreshUrl);
      totals = {
        total: fresh.totals.total,
        legit: fresh.totals.by_status.legit,
        suspicious: fresh.totals.by_status.suspicious,
        fraud: fresh.totals.by_status.fraud,
      };
      series = fresh.per_minute.map((row) => ({
        minute: new Date(row.minute).getTime(),
        total: row.total,
        flagged: row.flagged,
      }));
      schedule();
    } catch (error) {
      console.warn("overview catch-up failed", error);
    }
    loadFlagged();
  });

  // The rule performance panel: reloaded (server-rendered) when labels or
  // verdicts arrive, at most once every RULES_MIN_INTERVAL_MS; a label
  // confirmed by an analyst or a chargeback shows within a moment.
  const RULES_MIN_INTERVAL_MS = 3000;
  const rulesSection = document.getElementById("rule-performance");
  let rulesTimer = null;
  let rulesLast = 0;
  let rulesAsked = 0;

  async function refreshRules() {
    rulesTimer = null;
    rulesLast = Date.now();
    const asked = ++rulesAsked;
    try {
      const response = await fetch(rulesSection.dataset.url, {
        headers: { Accept: "text/html" },
        credentials: "same-origin",
      });
      const text = await response.text();
      // A signed-out session is redirected to the login page: not a panel. An
      // answer overtaken by a later one is dropped.
      if (response.ok && !response.redirected && asked === rulesAsked) {
        rulesSection.innerHTML = text;
      }
    } catch (error) {
      console.warn("rule performance refresh failed", error);
    }
  }

  function scheduleRules() {
    if (rulesTimer !== null) return;
    const wait = Math.max(0, rulesLast + RULES_MIN_INTERVAL_MS - Date.now());
    rulesTimer = setTimeout(refreshRules, wait);
  }

  Live.on("labels", scheduleRules);
  Live.on("batch", scheduleRules);
  Live.on("reconnect", scheduleRules);

  // Roll the chart forward on quiet minutes too.
  setInterval(function () {
    const now = Date.now();
    shiftTo(now - (now % 60000));
    schedule();
  }, 15000);

  render();
  loadFlagged();
})();
