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
        const notice = document.getElementById("esc-new");
        if (notice) notice.hidden = false;
      }
    });
  }
})();
