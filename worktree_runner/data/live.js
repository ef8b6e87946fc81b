// The live page (wtr report --serve): each new line of the run's event log arrives as a
// server-sent event; the page then fetches the re-rendered report and swaps it in, keeping
// the sections a reader opened or closed as they were. One fetch at a time: a burst of
// events costs one more fetch, not one per event; and a page slow to render (a run of
// hundreds of streams) is fetched at most a fifth of the time.
(() => {
  const token = new URLSearchParams(location.search).get("token") || "";
  const since = document.currentScript.dataset.since || "0";
  const main = document.getElementById("report");
  const toggled = new Map();
  let busy = false, again = false;

  main.addEventListener("click", (e) => {
    const summary = e.target.closest("summary");
    const details = summary && summary.parentElement;
    if (details && details.id) toggled.set(details.id, !details.open);
  });

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const started = performance.now();
        const response = await fetch("body?token=" + encodeURIComponent(token), {cache: "no-store"});
        if (!response.ok) break;
        const html = await response.text();
        main.innerHTML = html;
        for (const [id, open] of toggled) {
          const details = document.getElementById(id);
          if (details) details.open = open;
        }
        const title = main.querySelector("#run-state");
        if (title) document.title = document.title.replace(/— \S+$/, "— " + title.textContent);
        main.dataset.updates = String(Number(main.dataset.updates || "0") + 1);
        const took = performance.now() - started;
        if (again) await new Promise((done) => setTimeout(done, Math.max(250, 4 * took)));
      } while (again);
    } catch (err) {
      again = false;  // the server is gone; EventSource retries and brings us back
    } finally {
      busy = false;
    }
  }

  const source = new EventSource("events?token=" + encodeURIComponent(token) + "&since=" + since);
  source.onmessage = (e) => { main.dataset.lastEvent = e.lastEventId; refresh(); };
  // A runner killed outright writes no event (the server says when it sees it gone): while
  // the run is said to be running, look again now and then too (the durations and the ETA
  // follow).
  setInterval(() => { if (document.getElementById("in-progress")) refresh(); }, 10000);
})();
