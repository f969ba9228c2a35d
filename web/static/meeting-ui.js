// Small pieces of the meeting page's interface: icons from the page's SVG sprite, buttons,
// state flags with words for screen readers, and the notices shown under the header.

const SVG = "http://www.w3.org/2000/svg";
const NOTICE_MS = 6000;
const PROMPT_MS = 30000;
const MAX_NOTICES = 2;

/** An icon from the page's sprite (`#i-<name>`), hidden from assistive technology. */
export function icon(name, className = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", className);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

/** A button showing only an icon; `label` is its accessible name and tooltip. */
export function iconButton(name, label, onClick, className) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = className;
  el.setAttribute("aria-label", label);
  el.title = label;
  el.append(icon(name));
  el.addEventListener("click", onClick);
  return el;
}

/** A text button. */
export function button(text, onClick, className = "") {
  const el = document.createElement("button");
  el.type = "button";
  el.textContent = text;
  if (className) el.className = className;
  el.addEventListener("click", onClick);
  return el;
}

/** A state shown by an icon, with the same words for screen readers and as a tooltip. */
export function flag(name, text, className = "flag") {
  const el = document.createElement("span");
  el.className = className;
  el.title = text;
  el.append(icon(name));
  const words = document.createElement("span");
  words.className = "visually-hidden";
  words.textContent = text;
  el.append(words);
  return el;
}

/** Short messages in a live region; `changed` is called whenever one comes or goes. */
export class Notices {
  constructor(box, changed) {
    this.box = box;
    this.changed = changed;
  }

  /** Show `text` for a while; with actions ([label, fn] pairs) it stays until one is chosen
   *  (or much longer). Returns the notice element. */
  show(text, actions = [], lasts = NOTICE_MS) {
    const item = document.createElement("div");
    item.className = "toast";
    const words = document.createElement("span");
    words.textContent = text;
    item.append(words);
    const done = () => {
      item.remove();
      this.changed();
    };
    for (const [label, act] of actions) {
      item.append(button(label, () => { act(); done(); }));
    }
    this.box.append(item);
    // Old notices make way for new ones; a question still waiting for its answer goes last.
    while (this.box.children.length > MAX_NOTICES) {
      const items = [...this.box.children];
      (items.find((el) => !el.classList.contains("prompt") && el !== item) || items[0]).remove();
    }
    setTimeout(done, actions.length ? PROMPT_MS : lasts);
    this.changed();
    return item;
  }
}
