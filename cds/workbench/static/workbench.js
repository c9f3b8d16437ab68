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

  // A select that opens what it names as soon as it changes.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }

  // Proposing a policy change: the validator's messages (file:line) as the author types.
  const form = document.getElementById("propose-form");
  const text = document.getElementById("policy-text");
  const live = document.getElementById("live-problems");
  if (form && text && live) {
    let timer = null;
    text.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const body = new FormData();
        body.append("file", form.elements.file.value);
        body.append("text", text.value);
        body.append("csrf_token", form.elements.csrf_token.value);
        try {
          const response = await fetch(form.dataset.check, { method: "POST", body, credentials: "same-origin" });
          if (!response.ok) return;
          const result = await response.json();
          live.replaceChildren();
          live.className = result.valid ? "ok" : "error";
          if (result.valid) { live.textContent = "Valid as typed (Check also runs the test cases)."; return; }
          const list = document.createElement("ul");
          for (const p of result.problems) {
            const item = document.createElement("li");
            item.textContent = `${p.file}:${p.line}: ${p.message}`;
            list.append(item);
          }
          live.append(list);
        } catch (err) { /* offline or the session ended: Check still works */ }
      }, 400);
    });
  }
});
