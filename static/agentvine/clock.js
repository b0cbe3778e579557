// Times that stay true while a page is open: every <time datetime> shows a
// relative time ("3 min ago") that ticks, with the absolute time in the
// operator's own time zone on hover; every [data-since] shows the duration
// since then (42s, 3m 05s, 2h 10m), as the server renders it.
(function () {
  "use strict";
  const absolute = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
  const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
  const STEPS = [[60, "second"], [60, "minute"], [24, "hour"], [7, "day"], [4.35, "week"], [12, "month"], [Infinity, "year"]];

  function relativeText(seconds) {
    let value = seconds;
    for (const [size, unit] of STEPS) {
      if (Math.abs(value) < size) return relative.format(Math.round(value), unit);
      value /= size;
    }
    return "";
  }

  function durationText(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const pad = function (n) { return String(n).padStart(2, "0"); };
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + pad(seconds % 60) + "s";
    return Math.floor(seconds / 3600) + "h " + pad(Math.floor((seconds % 3600) / 60)) + "m";
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll("time[datetime]").forEach(function (node) {
      const at = Date.parse(node.getAttribute("datetime"));
      if (isNaN(at)) return;
      const text = relativeText((at - now) / 1000);
      if (node.textContent !== text) node.textContent = text;
      const title = absolute.format(at);
      if (node.title !== title) node.title = title;
    });
    document.querySelectorAll("[data-since]").forEach(function (node) {
      const since = Date.parse(node.dataset.since);
      if (isNaN(since)) return;
      const text = durationText((now - since) / 1000);
      if (node.textContent !== text) node.textContent = text;
    });
  }

  window.agentvineClock = { tick: tick, durationText: durationText };
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("agentvine:refreshed", tick);
  setInterval(tick, 1000);
})();
