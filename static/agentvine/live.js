// Live pages without a build step: one WebSocket per page (the path is in
// <main data-ws>), resuming from the last event id after a reconnect, plus
// the questions stream (ws/attention/) on pages whose own stream lacks it. A frame
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
  const lastEventId = main.dataset.lastEventId ? parseInt(main.dataset.lastEventId, 10) : null;
  const ATTENTION_PATH = "/ws/attention/";
  const ATTENTION_IN = "/ws/activity/";
  let replaceOutput = false;
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
    });
    // It spoke: it is no longer quiet.
    document.querySelectorAll('[data-quiet="' + payload.execution_id + '"]').forEach(function (flag) { flag.remove(); });
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

  // One notification per new question per browser: every console tab keeps
  // its 📬 count current, but only the tab holding the "notifications" lock
  // (Web Locks; the next tab takes over when it closes) shows notifications.
  // Without Web Locks the tabs claim each question on a BroadcastChannel.
  let notifier = false;
  const claims = "BroadcastChannel" in window ? new BroadcastChannel("agentvine-notifications") : null;
  const claimed = new Set();
  if (claims) claims.onmessage = function (message) { claimed.add(message.data); };
  if (navigator.locks) {
    navigator.locks.request("agentvine-notifications", function () {
      notifier = true;
      return new Promise(function () {}); // held for the life of the tab
    });
  }

  function questionsIn(root) {
    const found = new Map();
    root.querySelectorAll("[data-question]").forEach(function (node) { found.set(node.dataset.question, node.textContent); });
    return found;
  }

  function notify(id, taskTitle) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const show = function () {
      new Notification("AgentVine: an agent is waiting for an answer", { body: taskTitle, tag: "agentvine-question-" + id });
    };
    if (navigator.locks) { if (notifier) show(); return; }
    // No locks: wait a moment for another tab's claim, then claim it ourselves.
    setTimeout(function () {
      if (claimed.has(id)) return;
      claimed.add(id);
      if (claims) claims.postMessage(id);
      show();
    }, Math.random() * 400);
  }

  function notifyQuestions(doc) {
    const fresh = questionsIn(doc);
    if (knownQuestions !== null) {
      fresh.forEach(function (taskTitle, id) { if (!knownQuestions.has(id)) notify(id, taskTitle); });
    }
    knownQuestions = fresh;
  }

  function enableNotificationsControl() {
    const control = document.querySelector("[data-testid=enable-notifications]");
    if (!control || !("Notification" in window) || Notification.permission !== "default") return;
    // Asked only when the operator presses this, never on an unrelated click.
    control.hidden = false;
    control.addEventListener("click", function () {
      Notification.requestPermission().then(function () {
        control.hidden = Notification.permission === "default";
      });
    });
  }

  function handle(event) {
    if (event.type === "execution.output") appendOutput(event.payload || {});
    else scheduleRefresh();
  }

  // A socket that resumes from its own cursor and reconnects with backoff.
  function stream(path, cursor, onEvent, onOpen, onClose) {
    let retryDelay = 500;
    let opened = false;
    function open() {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      let url = scheme + window.location.host + path;
      if (cursor.id !== null) url += "?last_event_id=" + cursor.id;
      const socket = new WebSocket(url);
      socket.onopen = function () {
        retryDelay = 500;
        onOpen(opened);
        opened = true;
      };
      socket.onmessage = function (message) {
        try {
          const frame = JSON.parse(message.data);
          (frame.type === "batch" ? frame.events : [frame]).forEach(function (event) {
            if (typeof event.id === "number") cursor.id = event.id;
            onEvent(event);
          });
        } catch (err) { console.warn("bad live event", err); }
      };
      socket.onclose = function () {
        onClose();
        // Exponential backoff with jitter, capped at 15 s.
        setTimeout(open, retryDelay + Math.random() * retryDelay);
        retryDelay = Math.min(retryDelay * 2, 15000);
      };
      return socket;
    }
    return open;
  }

  function connect() {
    const cursor = { id: lastEventId };
    stream(main.dataset.ws, cursor, handle, function (reconnected) {
      if (state) state.classList.add("on");
      // After a reconnect the replay brings the events; a refresh also
      // covers anything older than the server keeps.
      if (reconnected) scheduleRefresh();
    }, function () { if (state) state.classList.remove("on"); })();
    // The activity stream carries every question already; other pages add
    // the questions stream, so the 📬 count is current on every page.
    if (main.dataset.ws !== ATTENTION_IN) {
      stream(ATTENTION_PATH, { id: lastEventId }, scheduleRefresh, function (reconnected) {
        if (reconnected) scheduleRefresh();
      }, function () {})();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const pane = output();
    if (pane) pane.scrollTop = pane.scrollHeight;
    knownQuestions = questionsIn(document);
    enableNotificationsControl();
  });
  connect();
})();
