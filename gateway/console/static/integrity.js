// The integrity page's verify button: while the server verifies (a plain form POST that
// works without this script), say so and keep the button from being pressed twice.
"use strict";
document.querySelectorAll("form.verify").forEach((form) => {
  form.addEventListener("submit", () => {
    const button = form.querySelector("button");
    const progress = form.querySelector(".progress");
    const records = form.dataset.records;
    progress.textContent = `Verifying ${records} records and every checkpoint…`;
    // Disabled after the submission has started, so the form is still sent.
    setTimeout(() => { button.disabled = true; }, 0);
  });
});
