// Acknowledge/resolve through the API (the same services as the admin), and keep the
// rows' status in step with the live escalation events.
(function () {
  "use strict";
  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }
  const STATUS = {
    escalation_acknowledged: "acknowledged",
    escalation_resolved: "resolved",
  };

  function rowsFor(id) {
    return document.querySelectorAll(`.esc-row[data-escalation-id="${id}"]`);
  }

  function show(id, status) {
    rowsFor(id).forEach((row) => {
      const label = row.querySelector(".esc-status");
      if (label) {
        label.textContent = status;
        label.className = `esc-status status-${status}`;
      }
      if (status !== "open") row.querySelectorAll("button.ack").forEach((b) => b.remove());
      if (status === "resolved") row.querySelectorAll("button.resolve").forEach((b) => b.remove());
    });
  }

  // A new escalation: fetch its row from the server (the same template as the page) and
  // put it in SLA order. If that fails, say so and offer a reload.
  async function insertRow(id) {
    const body = document.querySelector("#escalation-table tbody");
    if (!body) return;
    try {
      const response = await fetch(`/escalations/${id}/row/`, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const holder = document.createElement("tbody");
      holder.innerHTML = (await response.text()).trim();
      const row = holder.querySelector("tr.esc-row");
      if (!row || rowsFor(id).length) return;
      const due = Date.parse(row.querySelector(".countdown").dataset.due);
      const later = Array.from(body.querySelectorAll("tr.esc-row")).find(
        (r) => Date.parse(r.querySelector(".countdown").dataset.due) > due
      );
      body.insertBefore(row, later || null);
      body.querySelectorAll("tr.esc-empty").forEach((r) => r.remove());
      if (window.Dashboard && window.Dashboard.tick) window.Dashboard.tick();
    } catch (err) {
      const notice = document.getElementById("esc-new");
      if (notice) notice.hidden = false;
    }
  }

  document.addEventListener("click", async (e) => {
    const button = e.target.closest(".esc-actions button[data-action]");
    if (!button) return;
    const box = button.closest(".esc-actions");
    const id = box.dataset.escalationId;
    const error = box.querySelector(".esc-error");
    button.disabled = true;
    error.textContent = "";
    try {
      const response = await fetch(`/api/escalations/${id}/${button.dataset.action}/`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
        body: JSON.stringify({ note: "" }),
      });
      const payload = await response.json().catch(() => ({}));
      if (!response.ok) {
        error.textContent = (payload.error && payload.error.message) || `HTTP ${response.status}`;
        button.disabled = false;
        return;
      }
      show(id, payload.status);
    } catch (err) {
      error.textContent = String(err);
      button.disabled = false;
    }
  });

  if (window.Dashboard) {
    window.Dashboard.on((event) => {
      if (!event.escalation_id) return;
      if (STATUS[event.kind]) show(event.escalation_id, STATUS[event.kind]);
      if (event.kind === "escalated" && !rowsFor(event.escalation_id).length) {
        insertRow(event.escalation_id);
      }
    });
  }
})();
