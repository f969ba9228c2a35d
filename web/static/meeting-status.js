// What the page says about the meeting to someone not in it yet (pre-join and lobby), and to
// the people in it when someone knocks with no host to let them in. Words only; no I/O.

/** Lines for the pre-join and lobby screens (`waiting`) from the server's `status` message:
 *  [key, text] pairs. Whether it records has a notice of its own. `asHost`: this page holds
 *  the meeting's host key (it joins as a host, so it never waits for one). */
export function statusLines(status, waiting, asHost = false) {
  if (waiting) {
    // The lobby's own message has said already whether a host is here: this line says what to do.
    return [["locked", status.hosts_present ? "A host is in the meeting and has been told you are waiting."
      : "Keep this page open, or ask whoever invited you to join from their host link."]];
  }
  if (asHost) {
    return [["host", status.hosts_present ? "You join as a host. Another host is in the meeting."
      : "You join as the host."]];
  }
  if (status.locked) {
    return [["locked", status.hosts_present ? "The meeting is locked: a host will let you in."
      : "The meeting is locked and no host is in it: you will wait until one arrives."]];
  }
  return [["host", status.hosts_present ? "A host is in the meeting." : "No host is in the meeting yet."]];
}

/** Show `lines` in the status list `list` (each line an item with a class of its key). */
export function showStatus(list, lines, hostless) {
  list.replaceChildren();
  for (const [key, text] of lines) {
    const item = document.createElement("li");
    item.className = key;
    item.textContent = text;
    list.append(item);
  }
  list.classList.toggle("hostless", hostless);
  list.hidden = !lines.length;
}

/** The room's banner when people wait in the lobby that nobody present can admit. */
export function knockingText(count) {
  const who = count === 1 ? "Someone is" : `${count} people are`;
  return `${who} waiting to join, and no host is here to let them in. `
    + "A host can let them in by joining from the host link.";
}
