// The chat list: messages as text with their web links made clickable, system lines for
// arrivals and departures, and the count of messages nobody has seen yet.

// http(s) links only; trailing punctuation is usually the sentence's, not the link's.
const URL_PATTERN = /\bhttps?:\/\/[^\s<>"']+/gi;
const TRAILING = /[.,;:!?'")\]]+$/;

/** The text as DOM nodes: plain text, with each http(s) URL as a link that opens in a new
 *  tab and tells the target nothing (no opener, no referrer). */
export function linkify(text) {
  const out = document.createDocumentFragment();
  let at = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    let raw = match[0];
    const trailing = raw.match(TRAILING);
    // Keep a closing bracket that closes one opened inside the link (Wikipedia-style URLs).
    if (trailing && !(trailing[0] === ")" && raw.includes("("))) raw = raw.slice(0, -trailing[0].length);
    let url;
    try {
      url = new URL(raw);
    } catch (err) {
      continue;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    out.append(document.createTextNode(text.slice(at, match.index)));
    const a = document.createElement("a");
    a.href = url.href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = raw;
    out.append(a);
    at = match.index + raw.length;
  }
  out.append(document.createTextNode(text.slice(at)));
  return out;
}

function clock(at) {
  const date = at ? new Date(at) : new Date();
  return (Number.isNaN(date.getTime()) ? new Date() : date).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export class ChatLog {
  /** list: the <ol>; badge: the unread count element; isShown(): whether the chat is in view. */
  constructor(list, badge, isShown) {
    this.list = list;
    this.badge = badge;
    this.isShown = isShown;
    this.unread = 0;
  }

  clear() {
    this.list.replaceChildren();
    this.seen();
  }

  /** A message from someone: sender, time and text (never HTML). */
  message(name, at, text, mine) {
    const item = document.createElement("li");
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = clock(at);
    const sender = document.createElement("span");
    sender.className = "sender";
    sender.textContent = name;
    const body = document.createElement("span");
    body.className = "text";
    body.append(linkify(text));
    item.append(meta, sender, body);
    this.add(item);
    if (!mine && !this.isShown()) {
      this.unread += 1;
      this.showBadge();
    }
  }

  /** A line from the page itself: who joined or left. */
  system(text) {
    const item = document.createElement("li");
    item.className = "system";
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = clock();
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(meta, body);
    this.add(item);
  }

  add(item) {
    const list = this.list;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(item);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  /** The chat came into view: everything in it has been seen. */
  seen() {
    this.unread = 0;
    this.showBadge();
    this.list.scrollTop = this.list.scrollHeight;
  }

  showBadge() {
    this.badge.hidden = this.unread === 0;
    this.badge.querySelector(".n").textContent = String(this.unread);
  }
}
