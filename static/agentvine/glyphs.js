// Where no font has an emoji glyph the browser draws a "tofu" box: then the
// decorative emoji (.emoji, always next to words saying the same) are hidden.
// A glyph the fonts lack draws exactly like an unassigned code point does.
(function () {
  "use strict";
  function drawn(text) {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 24;
    const g = canvas.getContext("2d");
    if (!g) return null;
    g.textBaseline = "top";
    g.font = "18px sans-serif";
    g.fillText(text, 0, 0);
    return Array.prototype.join.call(g.getImageData(0, 0, 24, 24).data, ",");
  }
  const emoji = drawn("\u{1F4EC}");
  if (emoji !== null && emoji === drawn("\u{10FFFD}")) document.documentElement.classList.add("no-emoji");
})();
