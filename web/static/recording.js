// Recording page: dates in the viewer's own time zone, and the speaker timeline drawn to
// scale under the player with a time scale; a click seeks. The page reads as plain text and
// lists without this script; it only adds the local times and the bars.
"use strict";

(() => {
  const root = document.getElementById("recording");
  if (!root) return;
  if (root.dataset.state === "recording" || root.dataset.state === "composing") {
    // Being prepared: look again in a while (the server composes in the background).
    setTimeout(() => location.reload(), 10000);
    return;
  }
  for (const el of document.querySelectorAll("time.local-time, time.local-date")) {
    const when = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) continue;
    el.title = el.textContent;  // the UTC time the server wrote stays at hand
    el.textContent = el.classList.contains("local-date")
      ? when.toLocaleDateString([], { dateStyle: "medium" })
      : when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }
  const player = document.getElementById("player");
  const timeline = document.getElementById("timeline");
  if (!player || !timeline) return;
  const { duration } = JSON.parse(root.dataset.timeline || "{}");
  if (!duration) return;
  timeline.classList.add("drawn");
  const scale = timeScale();
  // As many ticks as fit without their labels touching, drawn again when the width changes.
  new ResizeObserver(() => fillScale(scale, duration)).observe(scale);
  for (const segment of timeline.querySelectorAll(".segment")) {
    const start = Number(segment.dataset.start);
    const end = Number(segment.dataset.end);
    // Positions come from data, set through the CSSOM: no inline style attributes (CSP).
    segment.style.left = `${(100 * start) / duration}%`;
    segment.style.width = `${Math.max(0.4, (100 * (end - start)) / duration)}%`;
    segment.addEventListener("click", () => {
      player.currentTime = start;
      player.play().catch(() => {});
    });
  }
  const cursors = [...timeline.querySelectorAll(".track")].map((track) => {
    const cursor = document.createElement("span");
    cursor.className = "cursor";
    track.append(cursor);
    return cursor;
  });
  player.addEventListener("timeupdate", () => {
    const at = `${(100 * player.currentTime) / duration}%`;
    for (const cursor of cursors) cursor.style.left = at;
  });

  function clock(seconds) {
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
  }

  function timeScale() {
    const row = document.createElement("div");
    row.className = "scale-row";
    row.setAttribute("aria-hidden", "true");
    const scale = document.createElement("div");
    scale.className = "scale";
    row.append(scale);
    timeline.before(row);
    return scale;
  }

  // Ticks at a round step: at most eight, and one per TICK_SPACE pixels at most.
  function fillScale(scale, length) {
    const TICK_SPACE = 64;  // wide enough for "1:00:00" in the scale's small type, with a gap
    const most = Math.max(1, Math.min(8, Math.floor(scale.clientWidth / TICK_SPACE)));
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
    const step = steps.find((s) => length / s <= most) || steps[steps.length - 1];
    const ticks = [];
    for (let t = 0; t <= length + 1e-6; t += step) {
      const tick = document.createElement("span");
      tick.className = "tick";
      tick.textContent = clock(t);
      tick.style.left = `${(100 * t) / length}%`;
      ticks.push(tick);
    }
    scale.replaceChildren(...ticks);
  }
})();
