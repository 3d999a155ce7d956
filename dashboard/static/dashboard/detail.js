/* Transaction detail: "Confirm fraud" / "Mark legitimate" without a reload. */
"use strict";

/* "← All transactions" goes back to the list as it was filtered and sorted
   (the list keeps its query in this tab's session storage). */
(function () {
  const back = document.getElementById("back-to-list");
  let query = null;
  try {
    query = sessionStorage.getItem("dash.listQuery");
  } catch (error) {
    // Storage may be off (privacy settings): the plain link still works.
  }
  if (back && query) {
    back.href = back.getAttribute("href") + "?" + query;
    back.textContent = "← Back to the list";
  }
})();

(function () {
  const form = document.getElementById("label-form");
  const current = document.getElementById("label-current");
  const history = document.getElementById("label-history");
  const failure = document.getElementById("label-error");

  function describe(label) {
    const when = Dash.utc(label.created_at);
    const who = label.created_by || label.source;
    const parts = [Dash.labelBadge(label), " by " + who + " · " + when + " UTC"];
    if (label.note) parts.push(" · “" + label.note + "”");
    return parts;
  }

  // A legitimate label on a fraud verdict teaches the card's profile: show the
  // profile as it is now (the server renders it; swap in its fresh copy).
  async function profileRefresh() {
    const panel = document.querySelector("[aria-labelledby='profile-title']");
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!panel || !response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.querySelector("[aria-labelledby='profile-title']");
    if (fresh) panel.replaceWith(fresh);
  }

  if (!form) return; // the user may read labels but not add them

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const button = event.submitter;
    const payload = {
      is_fraud: button && button.value === "true",
      note: form.elements.note.value,
    };
    failure.hidden = true;
    for (const control of form.querySelectorAll("button")) control.disabled = true;
    try {
      const label = await Dash.api(form.dataset.url, { method: "POST", body: payload });
      current.replaceChildren(...describe(label));
      const empty = history.querySelector(".empty");
      if (empty) empty.remove();
      history.prepend(Dash.el("li", {}, describe(label)));
      form.elements.note.value = "";
      // The label is saved: a failed refresh only leaves the panel as it was.
      if (!label.is_fraud) profileRefresh().catch(() => {});
    } catch (error) {
      failure.textContent = "Could not save the label: " + Dash.errorText(error);
      failure.hidden = false;
    } finally {
      for (const control of form.querySelectorAll("button")) control.disabled = false;
      if (button) button.focus();
    }
  });
})();

/* Block or allow this card, merchant or country (POST /api/lists); remove an
   entry (DELETE /api/lists/<id>). */
(function () {
  const entries = document.getElementById("list-entries");
  const failure = document.getElementById("list-error");
  if (entries) {
    entries.addEventListener("click", async function (event) {
      const button = event.target.closest("[data-remove-entry]");
      if (!button) return;
      if (!window.confirm("Remove this list entry? Later transactions are no longer decided by it.")) return;
      button.disabled = true;
      try {
        await Dash.api("/api/lists/" + encodeURIComponent(button.dataset.removeEntry), { method: "DELETE" });
        button.closest("li").remove();
        if (!entries.querySelector("li")) {
          entries.append(Dash.el("li", { class: "empty", text: "This card, merchant and country are on no list." }));
        }
      } catch (error) {
        button.disabled = false;
        if (failure) {
          failure.textContent = "Could not remove it: " + Dash.errorText(error);
          failure.hidden = false;
        }
      }
    });
  }
  const form = document.getElementById("list-form");
  if (!form) return;

  function describe(entry) {
    const verb = entry.action === "block" ? "Blocked" : "Allowed";
    const parts = [
      Dash.el("strong", { class: "list-" + entry.action, text: verb }),
      " " + entry.kind + " " + entry.value + " · “" + entry.note + "” · by " +
        entry.created_by + " · " + Dash.utc(entry.created_at) + " UTC",
    ];
    if (entry.expires_at) parts.push(" · until " + Dash.utc(entry.expires_at) + " UTC");
    if (form.dataset.canRemove) {
      parts.push(" ", Dash.el("button", { type: "button", class: "link-button", "data-remove-entry": String(entry.id), text: "Remove" }));
    }
    return parts;
  }

  // Enter in the reason box must not press Block (the form's first button):
  // a list decision is made with a button, on purpose.
  form.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && event.target.tagName === "INPUT") event.preventDefault();
  });

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const button = event.submitter;
    const target = form.elements.target.value;
    const split = target.indexOf(":");
    const payload = {
      kind: target.slice(0, split),
      value: target.slice(split + 1),
      action: button ? button.value : "block",
      note: form.elements.note.value.trim(),
    };
    const days = form.elements.expires.value;
    if (days) payload.expires_at = new Date(Date.now() + days * 86400000).toISOString();
    // A merchant or a country is everyone's payments there: ask first, to
    // block or to allow (an allow clears them whatever the rules say).
    if (payload.kind !== "card") {
      const verb = payload.action === "block" ? "Block" : "Allow";
      const outcome = payload.action === "block" ? "judged fraud" : "judged legitimate whatever the rules say";
      if (!window.confirm(verb + " every payment at " + payload.kind + " " + payload.value + "? Each one is " + outcome + " until the entry is removed" + (days ? " or ends." : "."))) {
        return;
      }
    }
    failure.hidden = true;
    for (const control of form.querySelectorAll("button")) control.disabled = true;
    try {
      const entry = await Dash.api("/api/lists", { method: "POST", body: payload });
      const empty = entries.querySelector(".empty");
      if (empty) empty.remove();
      entries.prepend(Dash.el("li", {}, describe(entry)));
      form.elements.note.value = "";
    } catch (error) {
      failure.textContent = "Could not add it: " + Dash.errorText(error);
      failure.hidden = false;
    } finally {
      for (const control of form.querySelectorAll("button")) control.disabled = false;
    }
  });
})();
