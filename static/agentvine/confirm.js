// Confirmation before destructive actions, with the browser's own <dialog>:
// a submit button with data-confirm="…" asks first ("{count}" is the number of
// ticked boxes of its form); only "yes" lets the form go. A header checkbox
// with data-select-all="name" ticks every box of that name.
(function () {
  "use strict";
  let confirmed = null;

  function ticked(form) {
    return document.querySelectorAll('input[type=checkbox][name=task][form="' + form.id + '"]:checked').length;
  }

  document.addEventListener("submit", function (event) {
    const button = event.submitter;
    if (!button || !button.dataset.confirm) return;
    if (confirmed === button) { confirmed = null; return; }
    event.preventDefault();
    const dialog = document.getElementById("confirm");
    if (!dialog || typeof dialog.showModal !== "function") return;
    const form = event.target;
    dialog.querySelector("#confirm-text").textContent = button.dataset.confirm.replace("{count}", String(ticked(form)));
    dialog.querySelector("#confirm-yes").textContent = button.dataset.confirmYes || "Yes";
    dialog.querySelector("#confirm-no").textContent = button.dataset.confirmNo || "No";
    dialog.returnValue = "";
    dialog.onclose = function () {
      if (dialog.returnValue !== "yes") return;
      confirmed = button;
      form.requestSubmit(button);
    };
    dialog.showModal();
  });

  document.addEventListener("change", function (event) {
    const all = event.target.closest && event.target.closest("[data-select-all]");
    if (!all) return;
    document.querySelectorAll('input[type=checkbox][name="' + all.dataset.selectAll + '"]').forEach(function (box) {
      box.checked = all.checked;
    });
  });
})();
