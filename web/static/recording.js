// Recording page: the speaker timeline drawn to scale under the player; a click seeks.
// The page renders as plain lists without this script; it only adds the bars.
"use strict";

(() => {
  const root = document.getElementById("recording");
  if (!root) return;
  if (root.dataset.state === "recording" || root.dataset.state === "composing") {
    // Being prepared: look again in a while (the server composes in the background).
    setTimeout(() => location.reload(), 10000);
    return;
  }
  const player = document.getElementById("player");
  const timeline = document.getElementById("timeline");
  if (!player || !timeline) return;
  const { duration } = JSON.parse(root.dataset.timeline || "{}");
  if (!duration) return;
  timeline.classList.add("drawn");
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
})();
