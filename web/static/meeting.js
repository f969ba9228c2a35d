// Meeting page: pre-join, then one peer connection to the server, which always offers.
// The page answers offers, trickles its candidates, and shows a tile per participant,
// a stage for screen shares, the people and chat panels, and the host's controls.
"use strict";

const $ = (id) => document.getElementById(id);
const app = $("app");
const meetingId = app.dataset.meetingId;
const fragment = new URLSearchParams(location.hash.slice(1));

const PING_EVERY_MS = 5000;
const SILENCE_LIMIT_MS = 12000;  // no message for this long: the connection is dead
// The server closes with this code when it ended the connection on purpose: never reconnect.
const CLOSE_FINAL = 4000;
const FINAL_REASONS = {
  replaced: "You joined this meeting again from another window.",
  left: "You left the meeting.",
};
const SPEAKER_EVERY_MS = 400;
const SPEAKING_LEVEL = 0.02;     // audioLevel (0..1) above which someone counts as speaking

const state = {
  name: "",
  local: new MediaStream(),   // what this browser can publish (may be empty: listen-only)
  screen: null,               // the display capture while sharing
  audioMuted: false,
  videoMuted: false,
  ws: null,
  pc: null,
  you: null,
  resume: null,
  participants: new Map(),    // id -> {info, tile, row}
  slots: [],                  // the m-lines of the last offer
  chain: Promise.resolve(),   // signaling messages are handled strictly in order
  left: false,
  retries: 0,
  lastMessage: 0,
  timers: [],
  hostKey: fragment.get("host"),
  e2ee: null,                 // E2EE.Session when the meeting is end-to-end encrypted and we hold its key
  recording: { active: false, available: true },
};

// Why a recording stopped (the server's reason codes), as people read it.
const RECORDING_STOPPED = {
  host: "Recording stopped.",
  empty: "Recording stopped.",
  disk: "Recording stopped: the server is low on disk space.",
  shutdown: "Recording stopped: the server is restarting.",
};

// ---------------------------------------------------------------- pre-join

async function acquireMedia() {
  // Try both, then each alone: a missing or refused device must not keep anyone out.
  const attempts = [
    [{ audio: true, video: true }, ""],
    [{ audio: true }, "No camera available: you will join with audio only"],
    [{ video: true }, "No microphone available: you will join with video only"],
  ];
  let lastError = null;
  for (const [constraints, note] of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      return { stream, note: note && `${note} (${lastError ? lastError.name : "no device"}).` };
    } catch (err) {
      lastError = err;
    }
  }
  const why = lastError ? lastError.name : "not supported";
  return { stream: new MediaStream(), note: `Camera and microphone unavailable (${why}): you will join listen-only.` };
}

function prepareE2ee() {
  if (app.dataset.e2ee !== "true") return true;
  const note = $("e2ee-note");
  note.hidden = false;
  if (!E2EE.supported()) {
    note.textContent = "This meeting is end-to-end encrypted, and this browser cannot encrypt media "
      + "(no WebRTC encoded transforms). Use a current Chrome, Edge, Firefox or Safari to join.";
    return false;
  }
  const key = fragment.get("key");
  if (!key) {
    note.textContent = "This meeting is end-to-end encrypted, but your link has no key (the part after #key=). "
      + "You will not be able to see, hear or read anyone. Ask for the full link.";
    return true;
  }
  state.e2ee = new E2EE.Session(key);
  note.textContent = "End-to-end encrypted: media and chat are encrypted in the browsers. "
    + "Anyone with this full link can join.";
  return true;
}

async function prepare() {
  $("name").value = localStorage.getItem("meetnow.name") || "";
  if (!navigator.mediaDevices || !window.RTCPeerConnection) {
    showNote("This browser cannot join meetings (no WebRTC).");
    $("join").disabled = true;
    return;
  }
  if (!prepareE2ee()) {
    $("join").disabled = true;
    return;
  }
  const { stream, note } = await acquireMedia();
  state.local = stream;
  // A media element without a picture to show would hold back the page's load event forever.
  if (stream.getVideoTracks().length) $("preview").srcObject = stream;
  else $("preview").hidden = true;
  if (note) showNote(note);
}

function showNote(text) {
  $("device-note").textContent = text;
  $("device-note").hidden = false;
}

function published() {
  const sources = [];
  if (state.local.getAudioTracks().length) sources.push("mic");
  if (state.local.getVideoTracks().length) sources.push("camera");
  return sources;
}

// ---------------------------------------------------------------- connection

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/m/${meetingId}/ws`);
  state.ws = ws;
  ws.onopen = () => {
    state.lastMessage = Date.now();
    send({
      type: "join", name: state.name, publish: published(),
      ...(state.resume ? { resume: state.resume } : {}),
      ...(state.hostKey ? { host_key: state.hostKey } : {}),
    });
  };
  ws.onmessage = (event) => {
    state.lastMessage = Date.now();
    const message = JSON.parse(event.data);
    state.chain = state.chain.then(() => handle(message)).catch((err) => console.error("signaling", err));
  };
  ws.onclose = (event) => {
    // In order, after every message that came before it: a "removed" or "meeting-ended"
    // still waiting behind an offer must win over reconnecting.
    state.chain = state.chain.then(() => {
      if (state.ws !== ws) return;
      if (event.code === CLOSE_FINAL) ended(FINAL_REASONS[event.reason] || "The meeting ended.");
      else lostConnection();
    });
  };
  stopTimers();
  state.timers.push(setInterval(() => {
    if (Date.now() - state.lastMessage > SILENCE_LIMIT_MS) ws.close();
    else send({ type: "ping" });
  }, PING_EVERY_MS));
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function stopTimers() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

function lostConnection() {
  teardown();
  if (state.left) return;
  setStatus("Connection lost. Reconnecting…");
  const delay = Math.min(500 * 2 ** state.retries, 5000);
  state.retries += 1;
  setTimeout(() => { if (!state.left) connect(); }, delay);
}

function teardown() {
  stopTimers();
  if (state.pc) state.pc.close();
  state.pc = null;
  state.slots = [];
  for (const id of [...state.participants.keys()]) removeParticipant(id);
  showStage(null, "");
}

async function handle(message) {
  switch (message.type) {
    case "welcome": return welcome(message);
    case "offer": return answer(message);
    case "participant-joined": return addParticipant(message.participant);
    case "participant-updated": return updateParticipant(message.participant);
    case "participant-left": return removeParticipant(message.id);
    case "chat": return showChat(message);
    case "locked": return showLocked(message.locked);
    case "lobby": return showLobby(message.waiting);
    case "lobby-added": return lobbyAdded(message.waiting);
    case "lobby-removed": return lobbyRemoved(message.id);
    case "waiting": return showWaiting(message.message);
    case "mute-request": return muteRequested(message.by);
    case "recording": return showRecording(message, true);
    case "recording-ready": return addRecordingLink(message, true);
    case "notice": return notice(message.text);
    case "denied":
    case "removed":
    case "meeting-ended": return ended(message.message);
    case "error": return serverError(message);
    case "pong": return undefined;
    default: console.warn("unknown message", message.type);
  }
}

function welcome(message) {
  state.retries = 0;
  state.you = message.you;
  state.resume = message.resume;
  setStatus("");
  show("room");
  state.pc = newPeerConnection(message.ice_servers);
  addParticipant(message.you);
  for (const participant of message.participants) addParticipant(participant);
  for (const el of document.querySelectorAll(".host-only")) el.hidden = !message.you.host;
  showLocked(message.locked);
  showRecording(message.recording, false);
  if (message.recording && message.recording.active) notice("This meeting is being recorded.");
  $("recordings").replaceChildren();
  $("recordings-panel").hidden = true;
  for (const link of message.recordings || []) addRecordingLink(link, false);
  sendMediaState();
  state.timers.push(setInterval(highlightSpeakers, SPEAKER_EVERY_MS));
}

function newPeerConnection(iceServers) {
  const pc = new RTCPeerConnection({
    iceServers, bundlePolicy: "max-bundle", ...(state.e2ee ? state.e2ee.peerConfig() : {}),
  });
  pc.onicecandidate = (event) => {
    const c = event.candidate;
    send({ type: "candidate", candidate: c ? c.candidate : "", sdpMid: c ? c.sdpMid : null,
           sdpMLineIndex: c ? c.sdpMLineIndex : null });
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed" && state.ws) state.ws.close();
  };
  return pc;
}

async function answer(offer) {
  const pc = state.pc;
  if (!pc) return;
  await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
  state.slots = offer.slots;
  const byMid = new Map(offer.slots.map((slot) => [slot.mid, slot]));
  for (const transceiver of pc.getTransceivers()) {
    const slot = byMid.get(transceiver.mid);
    if (!slot) {
      if (!transceiver.stopped) transceiver.direction = "inactive";
    } else if (slot.direction === "publish") {
      const track = localTrack(slot.source);
      transceiver.direction = track ? "sendonly" : "inactive";
      if (state.e2ee) state.e2ee.attach(transceiver.sender, "send", slot.kind);
      await transceiver.sender.replaceTrack(track);
    } else {
      transceiver.direction = "recvonly";
      if (state.e2ee) state.e2ee.attach(transceiver.receiver, "receive", slot.kind);
    }
  }
  await pc.setLocalDescription(await pc.createAnswer());
  send({ type: "answer", sdp: pc.localDescription.sdp });
  attachRemoteMedia();
}

function localTrack(source) {
  if (source === "mic") return state.local.getAudioTracks()[0] || null;
  if (source === "camera") return state.local.getVideoTracks()[0] || null;
  if (source === "screen") return state.screen ? state.screen.getVideoTracks()[0] : null;
  return null;
}

function receivedTracks() {
  const camera = new Map();  // participant id -> [tracks]
  let screen = null;
  for (const transceiver of state.pc.getTransceivers()) {
    const slot = state.slots.find((s) => s.mid === transceiver.mid && s.direction === "receive");
    if (!slot) continue;
    if (slot.source === "screen") {
      screen = { participant: slot.participant, track: transceiver.receiver.track };
    } else {
      if (!camera.has(slot.participant)) camera.set(slot.participant, []);
      camera.get(slot.participant).push(transceiver.receiver.track);
    }
  }
  return { camera, screen };
}

function attachRemoteMedia() {
  const { camera, screen } = receivedTracks();
  for (const [id, entry] of state.participants) {
    if (id === state.you.id) continue;
    setTracks(entry.tile.querySelector("video"), camera.get(id) || []);
  }
  if (state.screen) showStage(state.screen.getVideoTracks()[0], "You are sharing your screen");
  else if (screen) showStage(screen.track, `${nameOf(screen.participant)} is sharing their screen`);
  else showStage(null, "");
}

function setTracks(video, wanted) {
  const current = video.srcObject ? video.srcObject.getTracks() : [];
  if (wanted.length !== current.length || wanted.some((t) => !current.includes(t))) {
    video.srcObject = wanted.length ? new MediaStream(wanted) : null;
  }
}

function showStage(track, label) {
  $("stage").hidden = !track;
  setTracks($("stage-video"), track ? [track] : []);
  $("stage-name").textContent = label;
}

function nameOf(id) {
  const entry = state.participants.get(id);
  return entry ? entry.info.name : "Someone";
}

function serverError(message) {
  if (["meeting-full", "server-full", "lobby-full"].includes(message.code)) return ended(message.message);
  if (["chat-too-long", "chat-rate-limited", "not-host", "rate-limited", "recording-refused"].includes(message.code)) {
    notice(message.message);
  }
  console.warn("server refused a message:", message.code, message.message);
}

// ---------------------------------------------------------------- people

function addParticipant(info) {
  if (state.participants.has(info.id)) return updateParticipant(info);
  const isSelf = state.you && info.id === state.you.id;
  const tile = document.createElement("div");
  tile.className = "tile";
  tile.dataset.participant = info.id;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  if (isSelf) {
    video.muted = true;  // never play our own microphone back
    video.srcObject = state.local;
    tile.classList.add("self");
  }
  const label = document.createElement("span");
  label.className = "name";
  tile.append(video, label);
  $("grid").append(tile);
  const row = document.createElement("li");
  row.dataset.participant = info.id;
  $("people").append(row);
  state.participants.set(info.id, { info, tile, row });
  updateParticipant(info);
  if (state.pc && state.slots.length) attachRemoteMedia();
}

function updateParticipant(info) {
  const entry = state.participants.get(info.id);
  if (!entry) return;
  entry.info = info;
  const isSelf = state.you && info.id === state.you.id;
  const micOff = info.audio_muted || !info.publishes.includes("mic");
  const camOff = info.video_muted || !info.publishes.includes("camera");
  // Names are text, never HTML: textContent everywhere.
  const label = entry.tile.querySelector(".name");
  label.textContent = isSelf ? `${info.name} (you)` : info.name;
  if (micOff) label.append(flag("muted", "Microphone off"));
  entry.tile.classList.toggle("no-video", camOff);
  entry.tile.dataset.initial = (info.name[0] || "?").toUpperCase();
  renderRow(entry, info, isSelf, micOff, camOff);
  $("people-count").textContent = `(${state.participants.size})`;
  if (state.pc) attachRemoteMedia();
}

function flag(text, title) {
  const el = document.createElement("span");
  el.className = "muted-flag";
  el.textContent = text;
  el.title = title;
  return el;
}

function renderRow(entry, info, isSelf, micOff, camOff) {
  const row = entry.row;
  row.replaceChildren();
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = (isSelf ? `${info.name} (you)` : info.name) + (info.host ? " · host" : "");
  const status = document.createElement("span");
  status.className = "state";
  status.textContent = `${micOff ? "mic off" : "mic on"} · ${camOff ? "camera off" : "camera on"}`
    + (info.publishes.includes("screen") ? " · sharing" : "");
  row.append(who, status);
  if (state.you && state.you.host && !isSelf) {
    row.append(button("Ask to mute", () => send({ type: "ask-mute", id: info.id })));
    row.append(button("Remove", () => send({ type: "remove", id: info.id })));
  }
}

function button(text, onClick) {
  const el = document.createElement("button");
  el.type = "button";
  el.textContent = text;
  el.addEventListener("click", onClick);
  return el;
}

function removeParticipant(id) {
  const entry = state.participants.get(id);
  if (!entry) return;
  entry.tile.remove();
  entry.row.remove();
  state.participants.delete(id);
  $("people-count").textContent = state.participants.size ? `(${state.participants.size})` : "";
  if (state.pc) attachRemoteMedia();
}

async function highlightSpeakers() {
  const pc = state.pc;
  if (!pc) return;
  // Levels come from each browser's own audio pipeline (getStats), so this works the same in
  // end-to-end encrypted meetings and costs the server nothing.
  const levels = new Map();
  const stats = await pc.getStats();
  stats.forEach((report) => {
    if (report.kind !== "audio") return;
    if (report.type === "inbound-rtp") {
      const slot = state.slots.find((s) => s.mid === report.mid && s.direction === "receive");
      if (slot) levels.set(slot.participant, report.audioLevel || 0);
    } else if (report.type === "media-source" && state.you && !state.audioMuted) {
      levels.set(state.you.id, report.audioLevel || 0);
    }
  });
  let loudest = null;
  for (const [id, level] of levels) {
    if (level >= SPEAKING_LEVEL && (!loudest || level > levels.get(loudest))) loudest = id;
  }
  for (const [id, entry] of state.participants) {
    entry.tile.classList.toggle("speaking", id === loudest);
    entry.row.classList.toggle("speaking", id === loudest);
  }
}

// ---------------------------------------------------------------- lobby and host

function showLocked(locked) {
  $("locked-badge").hidden = !locked;
  $("lock").textContent = locked ? "Unlock meeting" : "Lock meeting";
  $("lock").dataset.locked = locked ? "true" : "false";
}

function showRecording(recording, changed) {
  if (!recording) return;
  const was = state.recording.active;
  state.recording = recording;
  $("recording-badge").hidden = !recording.active;
  const control = $("record");
  if (!recording.available) {
    control.textContent = "Recording unavailable";
    control.disabled = true;
    control.title = recording.message || "This meeting cannot be recorded.";
  } else {
    control.textContent = recording.active ? "Stop recording" : "Start recording";
    control.disabled = false;
    control.title = "";
  }
  if (!changed || was === recording.active) return;
  notice(recording.active ? "Recording started: everyone here is being recorded."
    : RECORDING_STOPPED[recording.reason] || "Recording stopped.");
}

function addRecordingLink(link, fresh) {
  const list = $("recordings");
  if ([...list.querySelectorAll("a")].some((a) => a.href === link.url)) return;
  const item = document.createElement("li");
  const anchor = document.createElement("a");
  anchor.href = link.url;
  anchor.target = "_blank";
  anchor.rel = "noopener";
  anchor.textContent = `Recording of ${new Date(link.started_at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" })}`;
  const until = document.createElement("span");
  until.className = "until";
  until.textContent = `available until ${link.delete_on}`;
  item.append(anchor, until);
  list.prepend(item);
  $("recordings-panel").hidden = false;
  if (fresh) notice("The recording is ready: its link is under Recordings.");
}

// Hosts get the whole lobby once on arrival, then one change at a time.
function showLobby(waiting) {
  $("lobby").replaceChildren();
  for (const person of waiting) lobbyAdded(person, false);
  $("lobby-panel").hidden = !waiting.length;
}

function lobbyAdded(person, announce = true) {
  const row = document.createElement("li");
  row.dataset.waiting = person.id;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = person.name;
  row.append(who,
    button("Admit", () => send({ type: "admit", id: person.id })),
    button("Deny", () => send({ type: "deny", id: person.id })));
  $("lobby").append(row);
  $("lobby-panel").hidden = false;
  if (announce) notice(`${person.name} is waiting to join.`);
}

function lobbyRemoved(id) {
  for (const row of $("lobby").querySelectorAll("li")) if (row.dataset.waiting === id) row.remove();
  $("lobby-panel").hidden = !$("lobby").children.length;
}

function showWaiting(text) {
  $("waiting-message").textContent = text;
  show("waiting");
  setStatus("");
}

function muteRequested(by) {
  if (!state.audioMuted && state.local.getAudioTracks().length) toggleAudio();
  notice(`${by} asked you to mute. You are muted; unmute when you want to speak.`);
}

function ended(text) {
  state.left = true;
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  teardown();
  stopScreen(false);
  show("left");
  $("left-message").textContent = text;
  setStatus("");
}

let noticeTimer = null;
function notice(text) {
  const el = $("notice");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

// ---------------------------------------------------------------- chat

async function sendChat(event) {
  event.preventDefault();
  const input = $("message");
  const text = input.value.trim();
  if (!text) return;
  if (app.dataset.e2ee === "true") {
    if (!state.e2ee) return notice("You cannot write here: your link has no key.");
    send({ type: "chat", ciphertext: await state.e2ee.encryptChat(text) });
  } else {
    send({ type: "chat", text });
  }
  input.value = "";
}

async function showChat(message) {
  let text = message.text;
  if (message.ciphertext !== undefined) {
    text = state.e2ee ? await state.e2ee.decryptChat(message.ciphertext) : null;
    if (text === null) text = "(an encrypted message you cannot read)";
  }
  const item = document.createElement("li");
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = new Date(message.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const sender = document.createElement("span");
  sender.className = "sender";
  sender.textContent = message.name;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;  // chat is text, never HTML
  item.append(meta, sender, body);
  const list = $("messages");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- controls

function sendMediaState() {
  send({ type: "media", audio_muted: state.audioMuted, video_muted: state.videoMuted });
}

function toggleAudio() {
  state.audioMuted = !state.audioMuted;
  for (const track of state.local.getAudioTracks()) track.enabled = !state.audioMuted;
  $("mute").textContent = state.audioMuted ? "Unmute" : "Mute";
  sendMediaState();
}

function toggleVideo() {
  state.videoMuted = !state.videoMuted;
  for (const track of state.local.getVideoTracks()) track.enabled = !state.videoMuted;
  $("camera").textContent = state.videoMuted ? "Start video" : "Stop video";
  sendMediaState();
}

async function toggleScreen() {
  if (state.screen) return stopScreen(true);
  try {
    state.screen = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (err) {
    return notice(`Screen sharing did not start (${err.name}).`);
  }
  // The browser's own "Stop sharing" ends the track: treat it like our button.
  state.screen.getVideoTracks()[0].addEventListener("ended", () => stopScreen(true));
  $("share").textContent = "Stop sharing";
  send({ type: "publish", source: "screen" });
  attachRemoteMedia();
}

function stopScreen(tell) {
  if (!state.screen) return;
  for (const track of state.screen.getTracks()) track.stop();
  state.screen = null;
  $("share").textContent = "Share screen";
  if (tell) send({ type: "unpublish", source: "screen" });
  if (state.pc) attachRemoteMedia();
}

function leave() {
  send({ type: "leave" });
  ended("You left the meeting.");
}

function show(section) {
  for (const id of ["prejoin", "waiting", "room", "left"]) $(id).hidden = id !== section;
}

function setStatus(text) {
  $("status").textContent = text;
}

async function join(event) {
  event.preventDefault();
  $("join").disabled = true;
  await mediaReady;  // publish what the devices give, even when Join is clicked at once
  $("join").disabled = false;
  state.name = $("name").value.trim();
  localStorage.setItem("meetnow.name", state.name);
  state.left = false;
  state.resume = null;
  $("messages").replaceChildren();
  $("mute").disabled = !state.local.getAudioTracks().length;
  $("camera").disabled = !state.local.getVideoTracks().length;
  $("share").disabled = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
  setStatus("Connecting…");
  connect();
}

$("join-form").addEventListener("submit", join);
$("chat-form").addEventListener("submit", sendChat);
$("mute").addEventListener("click", toggleAudio);
$("camera").addEventListener("click", toggleVideo);
$("share").addEventListener("click", toggleScreen);
$("lock").addEventListener("click", () => send({ type: "lock", locked: $("lock").dataset.locked !== "true" }));
$("record").addEventListener("click", () => {
  $("record").disabled = true;  // until the server says what happened
  send({ type: state.recording.active ? "stop-recording" : "start-recording" });
  setTimeout(() => { if (state.recording.available) $("record").disabled = false; }, 3000);
});
$("end").addEventListener("click", () => {
  if (confirm("End the meeting for everyone?")) send({ type: "end-meeting" });
});
$("leave").addEventListener("click", leave);
$("cancel-wait").addEventListener("click", leave);
$("rejoin").addEventListener("click", () => show("prejoin"));
window.addEventListener("pagehide", () => send({ type: "leave" }));

// For debugging from the console (and for tests): the live connection and who is shown.
window.meetnow = {
  get pc() { return state.pc; },
  get slots() { return state.slots; },
  get participants() { return state.participants; },
};

const mediaReady = prepare();
