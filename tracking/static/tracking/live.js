// The dashboard's live connection: /ws/tracking/ with heartbeats, reconnect with backoff,
// and catch-up from /api/tracking/events?after_id= so the log, not the socket, is the truth.
(function () {
  "use strict";
  const EVENTS_URL = "/api/tracking/events/";
  const body = document.body;
  const state = {
    cursor: Number(body.dataset.cursor || 0), // every event up to here has been handled
    seen: new Set(),                           // ids above the cursor that arrived live
    handlers: [],
    ws: null,
    attempts: 0,
    heartbeatSeconds: Number(body.dataset.heartbeat || 15),
    lastBeat: 0,
    syncing: null,
    stopped: false,
  };
  document.querySelectorAll("[data-event-id]").forEach((el) => state.seen.add(Number(el.dataset.eventId)));

  const conn = document.getElementById("conn");
  function health(kind, text) {
    if (!conn) return;
    conn.dataset.state = kind;
    conn.textContent = text;
  }

  function deliver(event) {
    const id = Number(event.id);
    if (id <= state.cursor) return;
    if (state.seen.has(id)) return;
    state.seen.add(id);
    for (const handler of state.handlers) {
      try { handler(event); } catch (err) { console.error(err); }
    }
  }

  // Fetch everything after the cursor, page by page; live events that arrive meanwhile
  // are deduplicated by id.
  function resync() {
    if (state.syncing) return state.syncing;
    state.syncing = (async () => {
      let after = state.cursor;
      for (;;) {
        const response = await fetch(`${EVENTS_URL}?after_id=${after}&limit=500`, {
          credentials: "same-origin", headers: { Accept: "application/json" },
        });
        if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
        const page = await response.json();
        for (const event of page.results) deliver(event);
        after = Math.max(after, Number(page.last_id || after));
        if (!page.has_more) break;
      }
      state.cursor = Math.max(state.cursor, after);
      for (const id of Array.from(state.seen)) if (id <= state.cursor) state.seen.delete(id);
    })().finally(() => { state.syncing = null; });
    return state.syncing;
  }

  function alertBox(alert) {
    const box = document.getElementById("alerts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = "alert";
    item.setAttribute("role", "alert");
    const title = document.createElement("strong");
    title.textContent = alert.subject || "Alert";
    const text = document.createElement("p");
    text.textContent = alert.body || "";
    item.append(title, text);
    if (alert.lead_id) {
      const link = document.createElement("a");
      link.href = `/leads/${alert.lead_id}/`;
      link.textContent = "Open the lead";
      item.append(link);
    }
    const close = document.createElement("button");
    close.className = "close";
    close.textContent = "×";
    close.addEventListener("click", () => item.remove());
    item.append(close);
    box.prepend(item);
  }

  function connect() {
    if (state.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/tracking/`);
    state.ws = ws;
    health("connecting", "connecting…");
    ws.onopen = () => {
      state.attempts = 0;
      state.lastBeat = Date.now();
      health("syncing", "syncing…");
      resync().then(() => health("live", "live"), () => health("stale", "sync failed"));
    };
    ws.onmessage = (message) => {
      const msg = JSON.parse(message.data);
      state.lastBeat = Date.now();
      if (msg.type === undefined && msg.id !== undefined) {
        deliver(msg); // a lifecycle event, as the events API returns it
      } else if (msg.type === "heartbeat") {
        state.heartbeatSeconds = Number(msg.interval_seconds || state.heartbeatSeconds);
        if (Number(msg.last_event_id) > state.cursor) {
          resync().then(() => health("live", "live"), () => health("stale", "sync failed"));
        } else if (!state.syncing) {
          health("live", "live");
        }
      } else if (msg.type === "alert") {
        alertBox(msg.alert);
      } else if (msg.type === "resync") {
        health("syncing", "catching up…");
      }
    };
    ws.onclose = (e) => {
      if (state.ws === ws) state.ws = null;
      if (e.code === 4403) {
        health("down", "not signed in");
        return;
      }
      // Exponential backoff with jitter, capped: a restarting server is not stampeded.
      const delay = Math.min(15000, 500 * 2 ** state.attempts) * (0.5 + Math.random() / 2);
      state.attempts += 1;
      health("down", `offline, retrying in ${Math.ceil(delay / 1000)}s`);
      setTimeout(connect, delay);
    };
  }

  // A socket that stops sending heartbeats is dead even if the browser has not noticed.
  setInterval(() => {
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN && state.lastBeat &&
        Date.now() - state.lastBeat > state.heartbeatSeconds * 2500) {
      health("stale", "no heartbeat");
      ws.close();
    }
  }, 1000);

  // SLA countdowns anywhere on the page.
  function tick() {
    const now = Date.now();
    document.querySelectorAll(".countdown[data-due]").forEach((el) => {
      const left = Math.round((Date.parse(el.dataset.due) - now) / 1000);
      const abs = Math.abs(left);
      const h = Math.floor(abs / 3600), m = Math.floor((abs % 3600) / 60), s = abs % 60;
      const text = `${h}h ${String(m).padStart(2, "0")}m ${String(s).padStart(2, "0")}s`;
      el.textContent = left >= 0 ? `${text} left` : `${text} overdue`;
      el.classList.toggle("overdue", left < 0);
    });
  }
  tick();
  setInterval(tick, 1000);

  // The feed, on pages that have one.
  const feed = document.getElementById("feed");
  function feedItem(event) {
    if (!feed || feed.querySelector(`[data-event-id="${event.id}"]`)) return;
    const li = document.createElement("li");
    li.dataset.eventId = event.id;
    li.className = `kind-${event.kind} fresh`;
    const time = document.createElement("time");
    time.dateTime = event.occurred_at;
    time.textContent = String(event.occurred_at).slice(11, 19);
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = event.kind;
    li.append(time, " ", kind);
    if (event.lead_id) {
      const a = document.createElement("a");
      a.href = `/leads/${event.lead_id}/`;
      a.textContent = ` lead ${event.lead_id}`;
      li.append(" ", a);
    }
    if (event.stage) {
      const st = document.createElement("span");
      st.className = "stage";
      st.textContent = ` stage ${event.stage}`;
      li.append(" ", st);
    }
    if (event.channel) {
      const ch = document.createElement("span");
      ch.className = "channel";
      ch.textContent = event.channel;
      li.append(" ", ch);
    }
    // Newest first; keep the list bounded, in id order even when catch-up arrives late.
    let before = null;
    for (const other of feed.children) {
      if (Number(other.dataset.eventId) < Number(event.id)) { before = other; break; }
    }
    feed.insertBefore(li, before);
    while (feed.children.length > 100) feed.lastElementChild.remove();
  }

  // The lead page's timeline takes this lead's new lifecycle events as they happen.
  const timeline = document.getElementById("timeline");
  function timelineItem(event) {
    if (!timeline || String(event.lead_id) !== timeline.dataset.leadId) return;
    if (timeline.querySelector(`[data-event-id="${event.id}"]`)) return;
    const li = document.createElement("li");
    li.className = "tl-event fresh";
    li.dataset.eventId = event.id;
    const time = document.createElement("time");
    time.textContent = String(event.occurred_at).slice(0, 16).replace("T", " ");
    const type = document.createElement("span");
    type.className = "tl-type";
    type.textContent = "event";
    const title = document.createElement("strong");
    title.textContent = event.kind.replace(/_/g, " ");
    const detail = document.createElement("span");
    detail.className = "muted";
    detail.textContent = [event.stage ? `stage ${event.stage}` : "", event.channel].filter(Boolean).join(" ");
    li.append(time, " ", type, " ", title, " ", detail);
    timeline.prepend(li);
  }

  window.Dashboard = {
    on(handler) { state.handlers.push(handler); },
    state,
    resync,
    tick, // fill in countdowns now (e.g. after inserting a row), not at the next second
  };
  window.Dashboard.on(feedItem);
  window.Dashboard.on(timelineItem);
  connect();
})();
