// cachestorm's additions to Locust's web UI page (served by cachestorm/webui.py as /cachestorm/ui.js).
// Only what Locust's own template arguments cannot do: the last run's verdict and report link, the
// form's group headings and full help texts, the contention group shown only for the scenarios that
// use it, and a note where the load shape sets the users. Idempotent: React re-renders the form, so
// every pass puts back what is missing.
(function () {
  "use strict";
  const conf = (window.templateArgs && window.templateArgs.cachestorm) || null;
  if (!conf) return;
  const COLOURS = {
    pass: "#1b5e20", fail: "#b71c1c", unknown: "#e65100", "bad input": "#4a148c",
    running: "#0d47a1", analysing: "#0d47a1",
  };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The banner: the newest run of the session, its verdict and its report.
  const banner = el("div", {
    id: "cachestorm-run",
    role: "status",
    style: "position:fixed;left:0;right:0;bottom:0;z-index:2000;padding:8px 16px;font:14px sans-serif;"
      + "color:#fff;background:#37474f;display:none;gap:16px;align-items:center;flex-wrap:wrap",
  });
  document.body.appendChild(banner);
  // Room under the page for the banner, so that it hides nothing of Locust's.
  document.body.style.paddingBottom = "48px";

  function showStatus(status) {
    const run = status.runs[0];
    if (!run) {
      banner.style.display = "none";
      return;
    }
    banner.style.display = "flex";
    banner.style.background = COLOURS[run.state] || "#37474f";
    banner.replaceChildren();
    banner.appendChild(el("strong", { "data-state": run.state, id: "cachestorm-state" }, run.state.toUpperCase()));
    banner.appendChild(el("span", { id: "cachestorm-line" }, `run ${run.run_id}: ${run.line}`));
    if (run.report) {
      const link = el("a", { href: run.report, target: "_blank", id: "cachestorm-report",
        style: "color:#fff;font-weight:bold" }, "report.html");
      banner.appendChild(link);
    }
    banner.appendChild(el("span", { id: "cachestorm-dir", style: "opacity:.85" }, `results: ${run.run_dir}`));
  }

  async function poll() {
    try {
      const reply = await fetch(conf.status, { cache: "no-store" });
      if (reply.ok) showStatus(await reply.json());
    } catch (_e) {
      // The master may be stopping; the next poll says more.
    }
  }

  function container(field) {
    return field.closest(".MuiFormControl-root, .MuiFormControlLabel-root") || field.parentElement;
  }

  // Locust's page names each field in camelCase (fill_delay_ms is fillDelayMs) and posts it back
  // in snake_case.
  function fieldNamed(root, name) {
    const camel = name.replace(/_([a-z0-9])/g, (_m, c) => c.toUpperCase());
    return root.querySelector(`[name="${CSS.escape(camel)}"]`);
  }

  // The form: group headings, full help texts, the contention group, the shape's note.
  function enhance() {
    // Locust's header shows its host, which cachestorm's users never use: the banner names the run.
    document.querySelectorAll("header p").forEach((label) => {
      const item = label.parentElement;
      if (label.textContent.trim() !== "Host" || item.style.display === "none") return;
      item.style.display = "none";
      const divider = item.nextElementSibling;
      if (divider && divider.tagName === "HR") divider.style.display = "none";
    });
    document.querySelectorAll("form").forEach((form) => {
      const scenario = fieldNamed(form, "scenario");
      const contention = !scenario || conf.contention_scenarios.includes(scenario.value);
      conf.groups.forEach((group) => {
        const hidden = group.title === conf.contention_group && !contention;
        group.fields.forEach((name, i) => {
          const field = fieldNamed(form, name);
          if (!field) return;
          const box = container(field);
          if (!box.dataset.cachestorm) {
            box.dataset.cachestorm = name;
            const help = conf.help[name];
            if (help) box.after(el("p", { class: "cachestorm-help", "data-for": name,
              style: "margin:-24px 0 0 4px;font:13px sans-serif;color:#757575;white-space:normal" }, help));
            if (i === 0) box.before(el("h3", { class: "cachestorm-group", "data-group": group.title,
              style: "margin:8px 0 -8px 0;font:600 15px sans-serif" }, group.title));
          }
          // With --class-picker, Locust's own Shape Class picker sets the shape: one picker only.
          const picked = name === "shape" && fieldNamed(form, "shape_class");
          const off = hidden || Boolean(picked);
          const parts = [box];
          const help = box.nextElementSibling;
          if (help && help.classList.contains("cachestorm-help")) parts.push(help);
          const heading = box.previousElementSibling;
          if (heading && heading.classList.contains("cachestorm-group")) parts.push(heading);
          parts.forEach((p) => {
            const display = off ? "none" : "";
            if (p.style.display !== display) p.style.display = display;
          });
        });
      });
      // cachestorm's users drive the target; Locust's host would be used by nothing.
      const host = fieldNamed(form, "host");
      if (host && container(host).style.display !== "none") container(host).style.display = "none";
      // Locust shows a disabled 0 where a shape sets the users; say what sets them instead.
      const users = fieldNamed(form, "userCount");
      const rate = fieldNamed(form, "spawnRate");
      if (users && rate) {
        const shaped = users.disabled;
        [users, rate].forEach((f) => {
          const display = shaped ? "none" : "";
          if (container(f).style.display !== display) container(f).style.display = display;
        });
        let note = form.querySelector(".cachestorm-shape-note");
        if (shaped && !note) {
          note = el("p", { class: "cachestorm-shape-note", style: "margin:0;font:14px sans-serif" });
          container(users).before(note);
        }
        if (note) {
          const locustPicker = fieldNamed(form, "shape_class");
          const picked = locustPicker || fieldNamed(form, "shape");
          const shape = (picked && picked.value) || conf.shape;
          const where = locustPicker ? ", " : " (Load shape in Custom parameters), ";
          const text = `Users and ramp-up: set by the load shape ${shape}${where}not by a number here.`;
          // Only on a change: a write is a mutation, which would call this again.
          if (note.textContent !== text) note.textContent = text;
          note.style.display = shaped ? "" : "none";
        }
      }
    });
  }

  // New nodes (a dialog, an opened accordion), and Locust disabling the user count when a shape
  // is picked; a change is seen after React has applied it.
  const watch = { childList: true, subtree: true, attributes: true, attributeFilter: ["disabled"] };
  new MutationObserver(enhance).observe(document.body, watch);
  document.addEventListener("change", () => setTimeout(enhance, 0), true);
  enhance();
  poll();
  setInterval(poll, 2000);
})();
