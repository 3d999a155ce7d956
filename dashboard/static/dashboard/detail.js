/* Transaction detail: "Confirm fraud" / "Mark legitimate" without a reload. */
"use strict";

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
