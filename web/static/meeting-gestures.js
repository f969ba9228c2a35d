// Reactions and raised hands on the meeting page: the fixed set of reactions (the server
// accepts these only), the picker, the short-lived bubble over a tile, and the hand flag.

import { flag } from "./meeting-ui.js";

// Emoji and the words screen readers say for them; the same set as the server's REACTIONS.
export const REACTIONS = [
  ["\u{1F44D}", "thumbs up"],
  ["\u{1F44F}", "applause"],
  ["\u2764\uFE0F", "heart"],
  ["\u{1F602}", "laughing"],
  ["\u{1F62E}", "surprised"],
  ["\u{1F389}", "celebrate"],
  ["\u{1F914}", "thinking"],
  ["\u{1F44B}", "waving"],
];
const WORDS = new Map(REACTIONS);
const SHOWN_MS = 4000;
const MAX_BUBBLES = 4;  // per tile: a burst of reactions does not cover the whole picture

/** Whether `emoji` is one of the reactions (anything else from the server is dropped). */
export function isReaction(emoji) {
  return WORDS.has(emoji);
}

/** Fill the picker with one button per reaction; `pick(emoji)` is called with the choice. */
export function buildPicker(menu, pick) {
  for (const [emoji, words] of REACTIONS) {
    const el = document.createElement("button");
    el.type = "button";
    el.className = "reaction-choice";
    el.textContent = emoji;
    el.setAttribute("aria-label", `React: ${words}`);
    el.title = words[0].toUpperCase() + words.slice(1);
    el.addEventListener("click", () => pick(emoji));
    menu.append(el);
  }
}

/** A reaction rising over `tile` for a few seconds; `live` (a polite live region) says it too. */
export function showReaction(tile, emoji, name, live) {
  const bubbles = tile.querySelectorAll(".reaction");
  if (bubbles.length >= MAX_BUBBLES) bubbles[0].remove();
  const bubble = document.createElement("span");
  bubble.className = "reaction";
  bubble.setAttribute("aria-hidden", "true");
  bubble.textContent = emoji;
  // Side by side when several arrive at once.
  bubble.style.setProperty("--slot", String(tile.querySelectorAll(".reaction").length));
  tile.append(bubble);
  setTimeout(() => bubble.remove(), SHOWN_MS);
  if (live) {
    const line = document.createElement("p");
    line.textContent = `${name}: ${WORDS.get(emoji)}`;
    live.append(line);
    setTimeout(() => line.remove(), SHOWN_MS);
  }
}

/** Raised hands, first raised first: [id, entry] pairs whose info.hand is set. */
export function handQueue(participants) {
  return [...participants].filter(([, e]) => e.info.hand !== null && e.info.hand !== undefined)
    .sort((a, b) => a[1].info.hand - b[1].info.hand);
}

/** The hand flag of a tile or people row: "Hand raised, 2nd" in words, the place as a number. */
export function handFlag(place) {
  const el = flag("hand", place > 0 ? `Hand raised (${ordinal(place)})` : "Hand raised", "flag hand-flag");
  const number = document.createElement("span");
  number.className = "hand-place";
  number.setAttribute("aria-hidden", "true");
  number.textContent = String(place);
  el.append(number);
  return el;
}

function ordinal(n) {
  const rule = new Intl.PluralRules("en", { type: "ordinal" }).select(n);
  return `${n}${{ one: "st", two: "nd", few: "rd" }[rule] || "th"}`;
}
