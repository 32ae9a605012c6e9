// Live updates for the Archy dashboard. Pages work without this script (reload to
// refresh); with it, an app's page follows the node's progress events and its log tail.
"use strict";
(function () {
  const MiB = 1024 * 1024;
  const mib = (b) => (b / MiB).toFixed(1) + " MiB";

  // Progress of the app this page is about, from the server-sent event stream.
  function follow(panel) {
    const app = panel.dataset.app;
    const stage = panel.querySelector(".stage");
    const bar = panel.querySelector("progress");
    const bytes = panel.querySelector(".bytes");
    const sources = panel.querySelector(".sources");
    const trail = panel.querySelector(".trail");
    let last = null;
    let rate = 0;
    let live = false; // saw work in progress while this page was open
    const events = new EventSource("/events?app=" + encodeURIComponent(app));
    events.onmessage = (message) => {
      let e;
      try { e = JSON.parse(message.data); } catch (_) { return; }
      if (e.app_id !== app) return;
      // When the first progress reached the screen, in ms since this page's navigation
      // began (the Install click, through its redirect): the dashboard benchmark reads it.
      if (!panel.dataset.firstEventMs) panel.dataset.firstEventMs = String(Math.round(performance.now()));
      const terminal = e.stage === "done" || e.stage === "failed";
      if (!terminal) live = true;
      panel.dataset.stage = e.stage;
      // The stages passed so far, the current one last: plan, fetch, verify, ...
      const steps = Array.from(trail.children);
      if (steps.length === 0 || steps[steps.length - 1].textContent !== e.stage) {
        steps.forEach((li) => li.removeAttribute("aria-current"));
        const li = document.createElement("li");
        li.textContent = e.stage;
        li.setAttribute("aria-current", "step");
        trail.append(li);
      }
      panel.classList.toggle("failed", e.stage === "failed");
      panel.classList.toggle("healthy", e.stage === "healthy" || e.stage === "done");
      stage.textContent = e.stage + (e.message ? ": " + e.message : "");
      if (e.bytes_total > 0) {
        const now = performance.now();
        if (last && now > last.t && e.bytes_done >= last.done) {
          const r = (e.bytes_done - last.done) / ((now - last.t) / 1000);
          rate = rate ? 0.7 * rate + 0.3 * r : r;
        }
        last = { t: now, done: e.bytes_done };
        bar.hidden = false;
        bar.max = e.bytes_total;
        bar.value = e.bytes_done;
        bytes.textContent = mib(e.bytes_done) + " of " + mib(e.bytes_total) + " verified" +
          (rate > 0 && e.bytes_done < e.bytes_total ? " · " + mib(rate) + "/s" : "");
      }
      const from = Object.entries(e.sources || {});
      if (from.length > 0) {
        sources.replaceChildren(...from.map(([name, b]) => {
          const li = document.createElement("li");
          li.textContent = name + ": " + mib(b);
          return li;
        }));
      }
      if ((e.stage === "healthy" || e.stage === "done") && panel.dataset.link) {
        const a = document.createElement("a");
        a.href = panel.dataset.link;
        a.textContent = " Open the app";
        stage.append(a);
      }
      if (terminal && live) {
        events.close();
        // The page's own state (phase, links, errors) is the server's to render.
        setTimeout(() => location.reload(), 600);
      }
    };
  }

  // The app's log tail, fetched again every two seconds while the page is visible.
  function tail(pre) {
    const url = "/apps/" + encodeURIComponent(pre.dataset.app) + "/logs";
    async function again() {
      if (!document.hidden) {
        try {
          const r = await fetch(url, { credentials: "same-origin" });
          if (r.ok) {
            const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.textContent = await r.text();
            if (atEnd) pre.scrollTop = pre.scrollHeight;
          }
        } catch (_) { /* the node restarts: try again next time */ }
      }
      setTimeout(again, 2000);
    }
    setTimeout(again, 2000);
  }

  const panel = document.getElementById("progress");
  if (panel) follow(panel);
  const logs = document.getElementById("logs");
  if (logs) tail(logs);
})();
