// pgx-cds workbench: a little progressive enhancement. Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Filter the rows of a table: <input data-filter="#table-id">
  for (const input of document.querySelectorAll("input[data-filter]")) {
    const table = document.querySelector(input.dataset.filter);
    if (!table) continue;
    input.addEventListener("input", () => {
      const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      for (const row of table.tBodies[0].rows) {
        const text = row.textContent.toLowerCase();
        row.hidden = !words.every((w) => text.includes(w));
      }
    });
  }

  // A suggestion button shows what accepting it would do (the EHR would carry out these actions).
  for (const button of document.querySelectorAll("button[data-toggle]")) {
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => {
      const target = document.getElementById(button.dataset.toggle);
      if (!target) return;
      target.hidden = !target.hidden;
      button.setAttribute("aria-pressed", String(!target.hidden));
    });
  }

  // "Load an example" fills the paste box with the shipped example request.
  const load = document.getElementById("load-example");
  const example = document.getElementById("example-request");
  const box = document.getElementById("request");
  if (load && example && box) {
    load.addEventListener("click", () => { box.value = example.content.textContent.trim(); box.focus(); });
  }
});
