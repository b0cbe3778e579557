// Live pages without a build step: one WebSocket per page (the path is in
// <main data-ws>), resuming from the last event id after a reconnect. A frame
// is one event, or {"type": "batch", "events": [...]} with several in order.
// Output events are appended to the output pane; any other event re-fetches
// the page and morphs its [data-live] regions into the fresh ones (debounced,
// idiomorph from static/agentvine/vendor/), so the server stays the only
// place that renders HTML. Morphing keeps the nodes that stay: focus, caret,
// typed text, scroll positions and open <details> survive an update.
(function () {
  "use strict";
  const main = document.querySelector("main[data-ws]");
  if (!main) return;
  const state = document.getElementById("live-state");
  let lastEventId = main.dataset.lastEventId ? parseInt(main.dataset.lastEventId, 10) : null;
  let replaceOutput = false;
  let connectedBefore = false;
  let retry = 500;
  let refreshTimer = null;
  let refreshes = 0;
  let knownQuestions = null;
  // The furthest output this page has heard of: a pane behind it is stale.
  let heard = { execution: null, nextSeq: 0 };

  function output() { return document.getElementById("output"); }

  function paneSeq(pane) { return parseInt(pane.dataset.nextSeq || "0", 10); }

  // Pages that list running agents (the Overview) show each one's latest
  // output line, straight from the output events.
  function showLatestLine(payload) {
    const lines = (payload.text || "").split("\n").filter(function (line) { return line.trim(); });
    if (!lines.length) return;
    document.querySelectorAll('[data-latest-output="' + payload.execution_id + '"]').forEach(function (cell) {
      cell.textContent = lines[lines.length - 1].slice(-200);
      cell.removeAttribute("data-quiet");
    });
  }

  function appendOutput(payload) {
    showLatestLine(payload);
    const pane = output();
    if (!pane) return;
    if (heard.execution !== payload.execution_id) heard = { execution: payload.execution_id, nextSeq: 0 };
    heard.nextSeq = Math.max(heard.nextSeq, payload.seq + 1);
    if (payload.execution_id !== pane.dataset.execution || payload.truncated) {
      // Another attempt started, or the chunk was too big to ride the event:
      // take the pane from the server.
      replaceOutput = true;
      scheduleRefresh();
      return;
    }
    const nextSeq = paneSeq(pane);
    if (payload.seq < nextSeq) return; // already rendered (replayed after render)
    if (payload.seq > nextSeq) { replaceOutput = true; scheduleRefresh(); return; } // a gap
    pane.dataset.nextSeq = String(payload.seq + 1);
    const nearBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
    pane.appendChild(document.createTextNode(payload.text));
    const chars = document.querySelector("[data-output-chars]");
    if (chars) chars.textContent = String((parseInt(chars.textContent, 10) || 0) + payload.text.length);
    if (nearBottom) pane.scrollTop = pane.scrollHeight;
  }

  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(refresh, 300);
  }

  async function refresh() {
    refreshTimer = null;
    // Refreshes can overlap: only the latest one applies, and what asked for
    // the pane is taken now, so a reason arising during the fetch asks again.
    const mine = ++refreshes;
    const replacing = replaceOutput;
    replaceOutput = false;
    const response = await fetch(window.location.href, { headers: { "X-Live-Refresh": "1" }, credentials: "same-origin" });
    if (!response.ok || mine !== refreshes) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    if (mine !== refreshes) return;
    doc.querySelectorAll("[data-live]").forEach(function (fresh) {
      const current = document.querySelector('[data-live="' + fresh.dataset.live + '"]');
      if (current && current.innerHTML !== fresh.innerHTML) morphRegion(current, fresh);
    });
    document.dispatchEvent(new CustomEvent("agentvine:refreshed"));
    const freshPane = doc.getElementById("output");
    const pane = output();
    if (freshPane && pane) {
      const otherExecution = freshPane.dataset.execution !== pane.dataset.execution;
      // A snapshot taken before output that was appended meanwhile is older than the pane.
      if (otherExecution || (replacing && paneSeq(freshPane) >= paneSeq(pane))) {
        pane.dataset.execution = freshPane.dataset.execution;
        pane.dataset.nextSeq = freshPane.dataset.nextSeq;
        pane.textContent = freshPane.textContent;
        pane.scrollTop = pane.scrollHeight;
      }
      if (heard.execution === pane.dataset.execution && paneSeq(pane) < heard.nextSeq) {
        // The page has heard of output the snapshot did not have yet.
        replaceOutput = true;
        scheduleRefresh();
      }
    }
    notifyQuestions(doc);
  }

  // A form control the operator has changed since it was rendered: the
  // server's copy of it is older than what the person typed or picked.
  function isEdited(node) {
    if (node.nodeType !== Node.ELEMENT_NODE) return false;
    if (node.tagName === "TEXTAREA") return node.value !== node.defaultValue;
    if (node.tagName === "INPUT") {
      if (node.type === "checkbox" || node.type === "radio") return node.checked !== node.defaultChecked;
      return node.value !== node.defaultValue;
    }
    if (node.tagName === "SELECT") {
      return Array.prototype.some.call(node.options, function (o) { return o.selected !== o.defaultSelected; });
    }
    return false;
  }

  function morphRegion(current, fresh) {
    Idiomorph.morph(current, fresh, {
      ignoreActiveValue: true,
      restoreFocus: true,
      callbacks: {
        beforeNodeMorphed: function (oldNode) { return !isEdited(oldNode); },
        // An open <details> stays as the operator left it (open or closed).
        beforeAttributeUpdated: function (name, element) { return !(name === "open" && element.tagName === "DETAILS"); },
      },
    });
  }

  function notifyQuestions(doc) {
    const badge = doc.querySelector("[data-testid=inbox]");
    const count = badge ? parseInt(badge.textContent.replace(/\D+/g, ""), 10) || 0 : 0;
    if (knownQuestions !== null && count > knownQuestions && "Notification" in window && Notification.permission === "granted") {
      new Notification("AgentVine: an agent is waiting for an answer", { body: count + " question(s) waiting" });
    }
    knownQuestions = count;
  }

  function handle(event) {
    if (typeof event.id === "number") lastEventId = event.id;
    if (event.type === "execution.output") appendOutput(event.payload || {});
    else scheduleRefresh();
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    let url = scheme + window.location.host + main.dataset.ws;
    if (lastEventId !== null) url += "?last_event_id=" + lastEventId;
    const socket = new WebSocket(url);
    socket.onopen = function () {
      retry = 500;
      if (state) state.classList.add("on");
      // After a reconnect the replay brings the events; a refresh also
      // covers anything older than the server keeps.
      if (connectedBefore) scheduleRefresh();
      connectedBefore = true;
    };
    socket.onmessage = function (message) {
      try {
        const frame = JSON.parse(message.data);
        (frame.type === "batch" ? frame.events : [frame]).forEach(handle);
      } catch (err) { console.warn("bad live event", err); }
    };
    socket.onclose = function () {
      if (state) state.classList.remove("on");
      // Exponential backoff with jitter, capped at 15 s.
      setTimeout(connect, retry + Math.random() * retry);
      retry = Math.min(retry * 2, 15000);
    };
    window.agentvineSocket = socket;
  }

  document.addEventListener("DOMContentLoaded", function () {
    const pane = output();
    if (pane) pane.scrollTop = pane.scrollHeight;
    const badge = document.querySelector("[data-testid=inbox]");
    knownQuestions = badge ? parseInt(badge.textContent.replace(/\D+/g, ""), 10) || 0 : 0;
    if ("Notification" in window && Notification.permission === "default") {
      document.body.addEventListener("click", function ask() {
        Notification.requestPermission();
        document.body.removeEventListener("click", ask);
      });
    }
  });
  connect();
})();
