// Meeting page: pre-join (preview, devices, name), then one peer connection to the server,
// which always offers. The page answers offers, trickles its candidates, and shows a tile per
// participant and per shared screen, the people and chat panels, and the host's controls.
// Signaling messages, and the socket's close, are handled strictly in order (one chain).

import { arrange } from "./meeting-layout.js";
import { Meter, acquire, canPickSpeaker, deviceOf, fillSelect, listDevices, loadPrefs, openTrack, savePrefs } from "./meeting-devices.js";
import { ChatLog } from "./meeting-chat.js";
import { Notices, button, flag, icon, iconButton } from "./meeting-ui.js";
import { SPEAKING_LEVEL, StatsReader } from "./meeting-stats.js";
import { buildPicker, handFlag, handQueue, isReaction, showReaction } from "./meeting-gestures.js";
import { knockingText, showStatus, statusLines } from "./meeting-status.js";

const $ = (id) => document.getElementById(id);
const app = $("app");
const meetingId = app.dataset.meetingId;
const encrypted = app.dataset.e2ee === "true";
const fragment = new URLSearchParams(location.hash.slice(1));
const HOST_STORE = `meetnow.host.${meetingId}`;

const PING_EVERY_MS = 5000;
const SILENCE_LIMIT_MS = 12000;  // no message for this long: the connection is dead
// The server closes with this code when it ended the connection on purpose: never reconnect.
const CLOSE_FINAL = 4000;
const FINAL_REASONS = {
  replaced: "You joined this meeting again from another window.",
  left: "You left the meeting.",
};
const STEP_LIMIT_MS = 20000;     // one signaling step taking longer than this has hung
const STATS_EVERY_MS = 400;
const ARRIVAL_MS = 4000;         // "X joined" and "X left" go sooner than other notices
const UNDECRYPTABLE_AFTER = 10;  // frames refused, none decrypted: that sender holds another key
const NARROW = window.matchMedia("(max-width: 759px)");
// The qualities a camera or screen is sent in, by the RIDs of the server's offer (lowest
// first). The server forwards each viewer the one that suits its link and tile size; the
// low one is sent only from three people on (with two, the one viewer's bandwidth shapes
// the single stream).
const LAYERS = {
  camera: { lo: { scaleResolutionDownBy: 2, maxBitrate: 120000 }, hi: { scaleResolutionDownBy: 1 } },
  // A screen keeps its resolution: its low quality is a low frame rate.
  screen: { lo: { scaleResolutionDownBy: 1, maxFramerate: 5, maxBitrate: 300000 }, hi: { scaleResolutionDownBy: 1 } },
};
const SIMULCAST_FROM = 3;        // people in the meeting
const TILE_REPORT_MS = 500;      // tile sizes go to the server at most this often

const state = {
  name: "",
  local: new MediaStream(),   // what this browser publishes now (may be empty: listen-only)
  hasMic: false,              // a microphone was granted: its slot is published even while muted
  hasCamera: false,           // likewise for the camera, published even while it is off
  audioMuted: false,
  videoMuted: false,
  busy: false,                // a camera or device change is under way
  screen: null,               // the display capture while sharing
  ws: null,
  joining: false,             // this connection asks to join (or will, once open); else it only watches
  synced: false,              // what changed while joining was sent again, after the first answer
  watchRetries: 0,
  pc: null,
  you: null,
  resume: null,
  participants: new Map(),    // id -> {info, tile, row}
  screens: new Map(),         // participant id -> tile of their shared screen
  screenOrder: [],            // participant ids, oldest share first
  ownScreenTile: null,
  slots: [],                  // the m-lines of the last offer
  chain: Promise.resolve(),
  epoch: 0,                   // one per connection; steps of an older one are skipped
  left: false,
  retries: 0,
  lastMessage: 0,
  timers: [],
  hostKey: takeHostKey(),
  e2ee: null,                 // E2EE.Session when the meeting is end-to-end encrypted and we hold its key
  keyCheck: null,             // what every page is shown of our key: see E2EE.keyCheck
  keyCheckReady: Promise.resolve(),
  handRaised: false,
  status: null,               // the server's last "status": records? locked? a host present?
  asked: new Set(),           // participants a host here asked to mute, no answer yet
  decryptBase: new Map(),     // "epoch:mid" -> {participant, ok, failed} when that m-line changed hands
  undecryptable: new Set(),
  recording: { active: app.dataset.recording === "true", available: !encrypted },
  prefs: loadPrefs(),
  view: null,                 // "grid" | "speaker" once chosen; by default speaker while a screen is shared
  pinned: null,               // tile key
  speaker: null,              // the remote participant shown large in speaker view
  candidate: null,            // loudest at the last reading, not yet the speaker
  selfHidden: false,
  side: null,                 // "people" | "chat" | null
  sideChosen: false,
  layering: Promise.resolve(), // changes to the video layers, one after the other
  tileSizes: "",              // the tile sizes last told to the server (JSON)
  tileTimer: 0,
  pausedVideo: new Set(),     // "participant:source" of videos the server paused to save bandwidth
};

const stats = new StatsReader();
const meter = new Meter($("meter"));
const chat = new ChatLog($("messages"), $("unread"), () => state.side === "chat");
// Notices sit in the page's flow above the tiles: the tiles are laid out again around them.
const notices = new Notices($("notices"), () => relayout());
const notice = (text, actions, lasts) => notices.show(text, actions, lasts);

// Why a recording stopped (the server's reason codes), as people read it.
const RECORDING_STOPPED = {
  host: "Recording stopped.",
  empty: "Recording stopped.",
  disk: "Recording stopped: the server is low on disk space.",
  shutdown: "Recording stopped: the server is restarting.",
};

// ---------------------------------------------------------------- the link

// The host key is read once, then taken out of the address bar (so copying the address never
// hands out host rights) and kept in this tab's storage for reloads and reconnects.
function takeHostKey() {
  const fromLink = fragment.get("host");
  if (fromLink) {
    try {
      sessionStorage.setItem(HOST_STORE, fromLink);
    } catch (err) {
      // Without storage a reload joins as a guest; this page still has the key.
    }
    fragment.delete("host");
    const rest = fragment.toString();
    history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    return fromLink;
  }
  try {
    return sessionStorage.getItem(HOST_STORE);
  } catch (err) {
    return null;
  }
}

function forgetHostKey() {
  state.hostKey = null;
  try {
    sessionStorage.removeItem(HOST_STORE);
  } catch (err) {
    // Nothing was stored.
  }
}

/** The link to give guests: this meeting, plus the end-to-end key where there is one. */
function inviteLink() {
  const key = fragment.get("key");
  return `${location.origin}/m/${meetingId}${encrypted && key ? `#key=${key}` : ""}`;
}

async function copyInvite() {
  const link = inviteLink();
  $("invite-link").value = link;
  const who = encrypted ? "Anyone with it can join and read the meeting (it holds the key)." : "Anyone with it can join.";
  try {
    await navigator.clipboard.writeText(link);
    notice(`Invite link copied. ${who}`);
  } catch (err) {
    notice(`Copy this invite link: ${link}`);
  }
}

// ---------------------------------------------------------------- pre-join

function prepareE2ee() {
  if (!encrypted) return true;
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
  state.keyCheckReady = state.e2ee.keyCheck.then((check) => { state.keyCheck = check; });
  note.textContent = "End-to-end encrypted: media and chat are encrypted in the browsers. "
    + "Anyone with this full link can join.";
  return true;
}

async function prepareMedia() {
  const { stream, note } = await acquire(state.prefs);
  state.local = stream;
  state.hasMic = stream.getAudioTracks().length > 0;
  state.hasCamera = stream.getVideoTracks().length > 0;
  state.audioMuted = false;
  state.videoMuted = false;
  showNote(note);
  showPreview();
  updateToggles();
  meter.attach(stream.getAudioTracks()[0]);
  refreshDevices();
}

async function prepare() {
  // A name typed while the page was still loading stays.
  if (!$("name").value) $("name").value = localStorage.getItem("meetnow.name") || "";
  // Disabled in the page until now: a click before this script ran would submit the form
  // to the server, reloading the page instead of joining.
  $("join").disabled = false;
  $("recording-notice").hidden = !state.recording.active;
  if (!navigator.mediaDevices || !window.RTCPeerConnection) {
    showNote("This browser cannot join meetings (no WebRTC).");
    $("join").disabled = true;
    return;
  }
  if (!prepareE2ee()) {
    $("join").disabled = true;
    return;
  }
  connect(false);  // told whether it records, is locked, has a host, while devices open
  $("share").hidden = !navigator.mediaDevices.getDisplayMedia;
  $("fullscreen").hidden = !document.fullscreenEnabled;
  if (navigator.mediaDevices.addEventListener) navigator.mediaDevices.addEventListener("devicechange", refreshDevices);
  await prepareMedia();
}

function showNote(text) {
  $("device-note").textContent = text || "";
  $("device-note").hidden = !text;
}

function showPreview() {
  const video = $("preview");
  const on = state.local.getVideoTracks().length > 0;
  // A media element without a picture to show would hold back the page's load event forever.
  if (on) {
    if (video.srcObject !== state.local) video.srcObject = state.local;
  } else {
    video.srcObject = null;
  }
  video.hidden = !on;
  $("preview-off").hidden = on;
  $("preview-off").textContent = state.hasCamera ? "Camera is off" : "No camera";
}

function published() {
  const sources = [];
  if (state.hasMic) sources.push("mic");
  if (state.hasCamera) sources.push("camera");
  return sources;
}

// ---------------------------------------------------------------- devices

async function refreshDevices() {
  const devices = await listDevices();
  fillSelect($("camera-select"), devices.videoinput, deviceOf(state.local.getVideoTracks()[0]) || state.prefs.camera, "Camera");
  fillSelect($("mic-select"), devices.audioinput, deviceOf(state.local.getAudioTracks()[0]) || state.prefs.mic, "Microphone");
  $("speaker-field").hidden = !canPickSpeaker || devices.audiooutput.length === 0;
  fillSelect($("speaker-select"), devices.audiooutput, state.prefs.speaker, "Speaker");
}

function publishSender(source) {
  if (!state.pc) return null;
  for (const transceiver of state.pc.getTransceivers()) {
    const slot = state.slots.find((s) => s.mid === transceiver.mid && s.direction === "publish");
    if (slot && slot.source === source) return transceiver.sender;
  }
  return null;
}

/** Put a new local track in place of the old one of its kind, on the preview, the self view
 *  and the server connection alike; the old one is stopped (its light goes out). */
async function swapLocalTrack(kind, track) {
  const old = kind === "audio" ? state.local.getAudioTracks()[0] : state.local.getVideoTracks()[0];
  // The sender lets go of the old track, then takes the new one, before the old one stops:
  // Chromium was seen to send nothing after a direct switch between two cameras.
  const sender = publishSender(kind === "audio" ? "mic" : "camera");
  if (sender) {
    if (old && track) await sender.replaceTrack(null);
    await sender.replaceTrack(track);
  }
  if (old) {
    state.local.removeTrack(old);
    old.stop();
  }
  if (track) state.local.addTrack(track);
  showPreview();
  refreshSelfTile();
  if (kind === "audio" && meterWanted()) meter.attach(track);
}

async function useDevice(kind, deviceId) {
  if (kind === "audiooutput") {
    state.prefs.speaker = deviceId;
    savePrefs(state.prefs);
    for (const audio of document.querySelectorAll(".tile audio")) setSink(audio);
    return;
  }
  if (state.busy) return;
  state.busy = true;
  try {
    if (kind === "audioinput") {
      state.prefs.mic = deviceId;
      if (state.hasMic) {
        const track = await openTrack(kind, deviceId);
        track.enabled = !state.audioMuted;
        await swapLocalTrack("audio", track);
      }
    } else {
      state.prefs.camera = deviceId;
      if (state.hasCamera && !state.videoMuted) await swapLocalTrack("video", await openTrack(kind, deviceId));
    }
    savePrefs(state.prefs);
  } catch (err) {
    notice(`That device could not be opened (${err.name}).`);
  } finally {
    state.busy = false;
    refreshDevices();
  }
}

function setSink(element) {
  if (canPickSpeaker && state.prefs.speaker && element.sinkId !== state.prefs.speaker) {
    element.setSinkId(state.prefs.speaker).catch(() => {});
  }
}

function meterWanted() {
  return !$("prejoin").hidden || !$("waiting").hidden || $("settings").open;
}

// ---------------------------------------------------------------- connection

/** Open the meeting's socket: to join (`joining`), or to watch its status until Join is
 *  pressed, when the same socket asks to join. */
function connect(joining) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/m/${meetingId}/ws`);
  state.ws = ws;
  state.joining = joining;
  // A fresh chain per connection: a step of an older one that never settles (a closed peer
  // connection leaves its promises pending) must not hold this one.
  state.epoch += 1;
  state.chain = Promise.resolve();
  const epoch = state.epoch;
  ws.onopen = () => {
    state.lastMessage = Date.now();
    if (state.joining) sendJoin();
    else send({ type: "watch" });
  };
  ws.onmessage = (event) => {
    state.lastMessage = Date.now();
    const message = JSON.parse(event.data);
    enqueue(epoch, () => handle(message), message.type);
  };
  // The close waits its turn too: a "meeting-ended" queued behind an offer must be seen
  // before the page decides the connection was lost and rejoins.
  ws.onclose = (event) => enqueue(epoch, () => {
    if (state.ws !== ws) return;
    if (!state.joining) return watchLost(event);
    // The server closed on purpose (removed, ended, full...): never rejoin by ourselves.
    if (event.code === CLOSE_FINAL) ended(FINAL_REASONS[event.reason] || "The meeting ended.");
    else lostConnection();
  }, "close");
  stopTimers();
  state.timers.push(setInterval(() => {
    if (Date.now() - state.lastMessage > SILENCE_LIMIT_MS) ws.close();
    else send({ type: "ping" });
  }, PING_EVERY_MS));
}

function sendJoin() {
  send({
    type: "join", name: state.name, publish: published(),
    // Others see us muted, or with the camera off, from the start.
    audio_muted: state.audioMuted, video_muted: state.videoMuted,
    ...(state.keyCheck ? { key_check: state.keyCheck } : {}),
    ...(state.resume ? { resume: state.resume } : {}),
    ...(state.hostKey ? { host_key: state.hostKey } : {}),
  });
}

/** The watching socket closed before Join: watch again a little later, while still undecided. */
function watchLost(event) {
  stopTimers();
  state.ws = null;
  state.epoch += 1;
  if (event.code === CLOSE_FINAL || state.watchRetries >= 5) return;  // the status stays as last told
  const delay = 2000 * 2 ** state.watchRetries;
  state.watchRetries += 1;
  setTimeout(() => { if (!state.ws && !state.joining && !$("prejoin").hidden) connect(false); }, delay);
}

/** Stop watching (the server has no room for it): Join opens a connection of its own. */
function stopWatching() {
  const ws = state.ws;
  if (!ws || state.joining) return;
  state.ws = null;
  state.epoch += 1;
  stopTimers();
  ws.close();
}

function enqueue(epoch, step, what) {
  state.chain = state.chain.then(() => {
    if (epoch !== state.epoch) return undefined;
    let timer;
    const hung = new Promise((resolve) => { timer = setTimeout(() => resolve("hung"), STEP_LIMIT_MS); });
    // A step that never finishes must not hold every later message (a "meeting-ended", the
    // socket's close): after a while the chain carries on without it.
    return Promise.race([Promise.resolve().then(step), hung]).then((result) => {
      clearTimeout(timer);
      if (result === "hung") console.warn(`signaling step hung (${what}); carrying on`);
    });
  }).catch((err) => console.error("signaling", err));
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function stopTimers() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

function lostConnection() {
  const ws = state.ws;
  state.ws = null;
  state.epoch += 1;
  if (ws) ws.close();
  teardown();
  if (state.left) return;
  setStatus("Connection lost. Reconnecting…");
  const delay = Math.min(500 * 2 ** state.retries, 5000);
  state.retries += 1;
  setTimeout(() => { if (!state.left && !state.ws) connect(true); }, delay);
}

function teardown() {
  stopTimers();
  if (state.pc) state.pc.close();
  state.pc = null;
  state.slots = [];
  stats.reset();
  state.undecryptable.clear();
  for (const id of [...state.participants.keys()]) removeParticipant(id, false);
  for (const id of [...state.screens.keys()]) removeScreenTile(id);
  if (state.ownScreenTile) state.ownScreenTile.remove();
  state.ownScreenTile = null;
  state.asked.clear();
  showKnocking(0);
}

async function handle(message) {
  switch (message.type) {
    case "welcome": return welcome(message);
    case "offer": return answer(message);
    case "participant-joined": return addParticipant(message.participant, true);
    case "participant-updated": return updateParticipant(message.participant);
    case "participant-left": return removeParticipant(message.id, true);
    case "chat": return showChat(message);
    case "locked": return showLocked(message.locked);
    case "lobby": return showLobby(message.waiting);
    case "lobby-added": return lobbyAdded(message.waiting);
    case "lobby-removed": return lobbyRemoved(message.id);
    case "waiting": return showWaiting(message.message, message.hosts_present);
    case "status": return showJoinStatus(message);
    case "knocking": return showKnocking(message.count);
    case "mute-request": return muteRequested(message.by, message.request);
    case "mute-answer": return muteAnswered(message);
    case "muted": return mutedBy(message.by);
    case "hand-lowered": return notice(`${message.by} lowered your hand.`);
    case "reaction": return reacted(message);
    case "made-host": return madeHost(message);
    case "recording": return showRecording(message, true);
    case "recording-ready": return addRecordingLink(message, true);
    case "notice": return notice(message.text);
    case "video-paused": return showVideoPaused(message.participant, message.source, message.paused);
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
  state.tileSizes = "";  // a new connection: the server knows nothing of our tiles yet
  state.pausedVideo.clear();
  // Before our own record is added: until our state has been sent again on this connection,
  // what the page meant (a raised hand) stands over what the server says of us.
  state.synced = false;
  forgetRoom();
  state.you = message.you;
  state.resume = message.resume;
  if (state.hostKey && !message.you.host) forgetHostKey();  // refused (the server said why)
  setStatus("");
  show("room");
  state.pc = newPeerConnection(message.ice_servers);
  addParticipant(message.you, false);
  for (const participant of message.participants) addParticipant(participant, false);
  showHostControls();
  showLocked(message.locked);
  showRecording(message.recording || { active: false, available: false }, false);
  if (message.recording && message.recording.active) notice("This meeting is being recorded.");
  for (const link of message.recordings || []) addRecordingLink(link, false);
  if (!state.sideChosen) setSide(NARROW.matches ? null : "people", false);
  showE2eeBanner();
  state.timers.push(setInterval(readStats, STATS_EVERY_MS));
  relayout();
}

/** Everything the page showed of the room from a previous connection goes: a new welcome
 *  (and what follows it) says it all again. */
function forgetRoom() {
  for (const id of [...state.participants.keys()]) removeParticipant(id, false);
  showLobby([]);
  showKnocking(0);
  showLocked(false);
  state.asked.clear();
  $("recordings").replaceChildren();
  $("recordings-panel").hidden = true;
  // Questions from before (a host's request to mute) belong to a connection that is gone.
  for (const prompt of $("notices").querySelectorAll(".toast.prompt")) prompt.remove();
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
      const declared = slot.source === "screen" ? Boolean(state.screen) : published().includes(slot.source);
      // A camera that is off still holds its slot (no track, nothing sent), so turning it on
      // needs no new negotiation.
      transceiver.direction = declared ? "sendonly" : "inactive";
      if (state.e2ee) state.e2ee.attach(transceiver.sender, "send", slot.kind, `${state.epoch}:${slot.mid}`);
      await transceiver.sender.replaceTrack(localTrack(slot.source));
    } else {
      transceiver.direction = "recvonly";
      if (state.e2ee) {
        const id = `${state.epoch}:${slot.mid}`;
        state.e2ee.attach(transceiver.receiver, "receive", slot.kind, id);
        const base = state.decryptBase.get(id);
        if (!base || base.participant !== slot.participant) {
          state.decryptBase.set(id, { participant: slot.participant, ...(state.e2ee.decrypts.get(id) || { ok: 0, failed: 0 }) });
        }
      }
    }
  }
  await pc.setLocalDescription(await pc.createAnswer());
  send({ type: "answer", sdp: pc.localDescription.sdp });
  if (!state.synced) syncState();
  await configureLayers();
  attachRemoteMedia();
}

/** Size each publish video's encodings by their RIDs, and send the low one only when enough
 *  people are here to need it. Browsers without simulcast have one encoding: left alone.
 *  One change at a time: parameters read for one are stale once another is applied. */
function configureLayers() {
  state.layering = state.layering.then(applyLayers).catch((err) => console.warn("video layers", err));
  return state.layering;
}

async function applyLayers() {
  if (!state.pc) return;
  const many = state.participants.size >= SIMULCAST_FROM;
  for (const transceiver of state.pc.getTransceivers()) {
    const slot = state.slots.find((s) => s.mid === transceiver.mid && s.direction === "publish");
    if (!slot || slot.kind !== "video" || transceiver.stopped) continue;
    const sender = transceiver.sender;
    if ((sender.getParameters().encodings || []).length < 2) continue;
    // Three temporal layers let the server halve a frame rate on the way; each layer keeps
    // its size (a busy computer lowers the frame rate instead), so the server's choice by
    // tile size means what it says. A browser that refuses those still gets the layers.
    for (const extras of [true, false]) {
      try {
        await setLayers(sender, slot.source, many, extras);
        break;
      } catch (err) {
        if (!extras) console.warn("could not set the video layers", err);
      }
    }
  }
}

async function setLayers(sender, source, many, extras) {
  const params = sender.getParameters();
  const wanted = (encoding) => ({
    ...(LAYERS[source] || {})[encoding.rid],
    active: encoding.rid !== "lo" || many,
    ...(extras ? { scalabilityMode: "L1T3" } : {}),
  });
  let changed = false;
  if (extras && params.degradationPreference !== "maintain-resolution") {
    params.degradationPreference = "maintain-resolution";
    changed = true;
  }
  for (const encoding of params.encodings) {
    for (const [key, value] of Object.entries(wanted(encoding))) {
      if (encoding[key] !== value) {
        encoding[key] = value;
        changed = true;
      }
    }
  }
  if (changed) await sender.setParameters(params);
}

/** After the first answer (the server takes other messages once media is set up), say again
 *  what changed while joining, and what a page back from a blip had: mute state, a raised
 *  hand, a shared screen. */
function syncState() {
  state.synced = true;
  sendMediaState();
  if (state.handRaised) send({ type: "hand", raised: true });
  if (state.screen) send({ type: "publish", source: "screen" });
}

function localTrack(source) {
  if (source === "mic") return state.local.getAudioTracks()[0] || null;
  if (source === "camera") return state.local.getVideoTracks()[0] || null;
  if (source === "screen") return state.screen ? state.screen.getVideoTracks()[0] : null;
  return null;
}

function receiveSlot(mid) {
  return state.slots.find((s) => s.mid === mid && s.direction === "receive") || null;
}

function receivedTracks() {
  const camera = new Map();  // participant id -> [tracks]
  const screens = new Map(); // participant id -> track
  for (const transceiver of state.pc.getTransceivers()) {
    const slot = receiveSlot(transceiver.mid);
    if (!slot) continue;
    if (slot.source === "screen") {
      screens.set(slot.participant, transceiver.receiver.track);
    } else {
      if (!camera.has(slot.participant)) camera.set(slot.participant, []);
      camera.get(slot.participant).push(transceiver.receiver.track);
    }
  }
  return { camera, screens };
}

function attachRemoteMedia() {
  if (!state.pc) return;
  const { camera, screens } = receivedTracks();
  for (const [id, entry] of state.participants) {
    if (id === state.you.id) continue;
    // Sound plays from its own element: a video element waiting for a first frame (camera
    // off) would hold the sound back with it.
    const tracks = camera.get(id) || [];
    setTracks(entry.tile.querySelector("video"), tracks.filter((t) => t.kind === "video"));
    // Without the key, encrypted sound decodes to noise: play none.
    setTracks(entry.tile.querySelector("audio"), keyless() ? [] : tracks.filter((t) => t.kind === "audio"));
  }
  for (const id of [...state.screens.keys()]) {
    if (!screens.has(id) || !state.participants.has(id)) removeScreenTile(id);
  }
  for (const [id, track] of screens) {
    if (!state.participants.has(id)) continue;
    let tile = state.screens.get(id);
    if (!tile) {
      tile = makeTile(`screen:${id}`, { screen: true });
      state.screens.set(id, tile);
      state.screenOrder.push(id);
      labelTile(tile, nameOf(id), "'s screen");
      // A new presentation is shown large, whatever view was chosen before (a pin stays).
      state.view = null;
    }
    setTracks(tile.querySelector("video"), [track]);
  }
  showOwnScreen();
  relayout();
}

function setTracks(video, wanted) {
  const current = video.srcObject ? video.srcObject.getTracks() : [];
  if (wanted.length !== current.length || wanted.some((t) => !current.includes(t))) {
    video.srcObject = wanted.length ? new MediaStream(wanted) : null;
  }
}

function nameOf(id) {
  const entry = state.participants.get(id);
  return entry ? entry.info.name : "Someone";
}

function serverError(message) {
  if (!state.joining) {
    // Only watching the status: Join opens a connection of its own and hears the real answer.
    if (["server-full", "watchers-full", "rate-limited"].includes(message.code)) stopWatching();
    return console.warn("status unavailable:", message.code);
  }
  if (["meeting-full", "server-full", "lobby-full", "knock-rate-limited"].includes(message.code)) {
    return ended(message.message);
  }
  if (["chat-too-long", "chat-rate-limited", "not-host", "rate-limited", "recording-refused", "mute-pending",
       "already-host"].includes(message.code)) {
    notice(message.message);
  }
  console.warn("server refused a message:", message.code, message.message);
}

// ---------------------------------------------------------------- tiles

function makeTile(key, { self = false, screen = false } = {}) {
  const tile = document.createElement("div");
  tile.className = "tile";
  tile.dataset.key = key;
  tile.classList.toggle("self", self);
  tile.classList.toggle("screen", screen);
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;  // sound has an element of its own; never our own microphone back
  for (const type of ["loadedmetadata", "resize"]) video.addEventListener(type, relayout);
  const avatar = document.createElement("div");
  avatar.className = "avatar";
  avatar.setAttribute("aria-hidden", "true");
  const note = document.createElement("p");
  note.className = "tile-note";
  note.hidden = true;
  const label = document.createElement("div");
  label.className = "name";
  const text = document.createElement("span");
  text.className = "name-text";
  const flags = document.createElement("span");
  flags.className = "flags";
  label.append(text, flags);
  const actions = document.createElement("div");
  actions.className = "tile-actions";
  actions.append(iconButton("pin", "Pin", () => pin(key), "pin"));
  if (self && !screen) {
    actions.append(iconButton("self", "Hide self view", () => setSelfHidden(true), "hide-self"));
  } else if (document.fullscreenEnabled) {  // no dead buttons where a browser has no full screen
    actions.append(iconButton("full", "Full screen", () => tileFullscreen(tile), "full"));
  }
  tile.append(video, avatar, note, label, actions);
  if (!self && !screen) {
    const audio = document.createElement("audio");
    audio.autoplay = true;
    setSink(audio);
    tile.append(audio);
  }
  if (!screen) {
    const quality = document.createElement("span");
    quality.className = "quality";
    quality.dataset.level = "unknown";
    quality.setAttribute("role", "img");
    quality.setAttribute("aria-label", "Connection: measuring");
    for (let i = 0; i < 3; i += 1) quality.append(document.createElement("i"));
    tile.append(quality);
  }
  $("tiles").append(tile);
  return tile;
}

/** Name a tile: `suffix` (" (you)", "'s screen") stays in sight when a long name is cut short.
 *  Without arguments, the tile's buttons are named again (pinned or not) under its old name. */
function labelTile(tile, name = tile.dataset.name || "", suffix = tile.dataset.suffix || "") {
  tile.dataset.name = name;
  tile.dataset.suffix = suffix;
  const main = document.createElement("span");
  main.className = "name-main";
  main.textContent = name;
  tile.querySelector(".name-text").replaceChildren(main);
  if (suffix) {
    const rest = document.createElement("span");
    rest.className = "name-suffix";
    rest.textContent = suffix;
    tile.querySelector(".name-text").append(rest);
  }
  for (const button of tile.querySelectorAll(".tile-actions button")) {
    const what = button.classList.contains("pin") ? (tile.classList.contains("pinned") ? "Unpin" : "Pin")
      : button.classList.contains("full") ? "Full screen" : "Hide self view";
    const label = what === "Hide self view" ? what : `${what} ${name}${suffix}`;
    button.setAttribute("aria-label", label);
    button.title = label;
  }
}

function removeScreenTile(id) {
  const tile = state.screens.get(id);
  if (tile) tile.remove();
  state.screens.delete(id);
  state.screenOrder = state.screenOrder.filter((p) => p !== id);
  if (state.pinned === `screen:${id}`) state.pinned = null;
}

/** Our own share is never shown back to us live (a hall of mirrors): a card says so instead. */
function showOwnScreen() {
  if (state.screen && !state.ownScreenTile && state.you) {
    const tile = makeTile("screen:self", { self: true, screen: true });
    tile.classList.add("presenting");
    labelTile(tile, "Your screen");
    tile.querySelector(".tile-actions").remove();
    const card = document.createElement("div");
    card.className = "presenting-card";
    const words = document.createElement("p");
    words.textContent = "You are sharing your screen with everyone";
    card.append(icon("screen"), words, button("Stop sharing", () => stopScreen(true), "danger"));
    tile.append(card);
    state.ownScreenTile = tile;
  } else if (!state.screen && state.ownScreenTile) {
    state.ownScreenTile.remove();
    state.ownScreenTile = null;
  }
}

function refreshSelfTile() {
  if (!state.you) return;
  const entry = state.participants.get(state.you.id);
  if (!entry) return;
  const video = entry.tile.querySelector("video");
  if (state.local.getVideoTracks().length) {
    if (video.srcObject !== state.local) video.srcObject = state.local;
  } else {
    video.srcObject = null;
  }
  entry.tile.classList.toggle("no-video", !state.local.getVideoTracks().length);
}

function aspectOf(tile) {
  const video = tile.querySelector("video");
  if (!video || tile.classList.contains("no-video") || tile.classList.contains("presenting")) return 0;
  return video.videoWidth > 0 && video.videoHeight > 0 ? video.videoWidth / video.videoHeight : 0;
}

function viewMode() {
  if (state.pinned) return "speaker";
  return state.view || (state.screens.size ? "speaker" : "grid");
}

function mainTile(tiles) {
  const byKey = (key) => tiles.find((t) => t.dataset.key === key);
  if (state.pinned && byKey(state.pinned)) return byKey(state.pinned);
  for (let i = state.screenOrder.length - 1; i >= 0; i -= 1) {
    const tile = byKey(`screen:${state.screenOrder[i]}`);
    if (tile) return tile;
  }
  if (state.speaker && byKey(state.speaker)) return byKey(state.speaker);
  return tiles.find((t) => !t.classList.contains("self")) || tiles[0];
}

let layoutFrame = 0;
/** Lay the tiles out again (soon, once per frame however often it is asked). */
function relayout() {
  if (layoutFrame) return;
  layoutFrame = requestAnimationFrame(() => {
    layoutFrame = 0;
    layoutNow();
  });
}

function layoutNow() {
  if ($("room").hidden) return;
  const remote = [...state.participants.keys()].filter((id) => !state.you || id !== state.you.id).length;
  $("alone").hidden = remote > 0;
  if (remote === 0) $("invite-link").value = inviteLink();
  const container = $("tiles");
  let tiles = [...container.children].filter((t) => !(state.selfHidden && t.classList.contains("self") && !t.classList.contains("screen")));
  for (const tile of container.children) tile.hidden = !tiles.includes(tile);
  // Shared screens first, then the others in order of arrival, ourselves last. (Sorted here,
  // not in the document: moving a playing video element would pause it.)
  const rank = (t) => (t.classList.contains("self") ? 2 : 0) + (t.classList.contains("screen") ? 0 : 1);
  tiles = tiles.map((t, i) => [rank(t), i, t]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((x) => x[2]);
  let mode = remote === 0 ? "alone" : viewMode();
  if (mode === "speaker" && tiles.length > 1) {
    const main = mainTile(tiles);
    tiles = [main, ...tiles.filter((t) => t !== main)];
  } else if (mode === "speaker") {
    mode = "grid";
  }
  for (const tile of tiles) tile.classList.toggle("main", mode === "speaker" && tile === tiles[0]);
  container.dataset.mode = mode;
  arrange(container, tiles.map((el) => ({ el, aspect: aspectOf(el) })), mode);
  reportTileSizes();
  for (const [key, button] of [["grid", $("view-grid")], ["speaker", $("view-speaker")]]) {
    button.setAttribute("aria-pressed", String(mode === key || (mode === "alone" && key === "grid")));
  }
}

/** Tell the server how large each remote video is shown (device pixels; 0 when hidden), so a
 *  thumbnail is sent a small quality and a large tile a good one. At most every half second. */
function reportTileSizes() {
  if (state.tileTimer || !state.ws || !state.you) return;
  const tiles = [];
  const scale = window.devicePixelRatio || 1;
  const add = (participant, source, tile) => {
    const shown = !tile.hidden && !$("room").hidden;
    tiles.push({ participant, source, width: shown ? Math.round(tile.clientWidth * scale) : 0,
                 height: shown ? Math.round(tile.clientHeight * scale) : 0 });
  };
  for (const [id, entry] of state.participants) if (id !== state.you.id) add(id, "camera", entry.tile);
  for (const [id, tile] of state.screens) add(id, "screen", tile);
  const text = JSON.stringify(tiles);
  if (text === state.tileSizes) return;
  state.tileSizes = text;
  send({ type: "video-sizes", tiles });
  state.tileTimer = setTimeout(() => {
    state.tileTimer = 0;
    reportTileSizes();
  }, TILE_REPORT_MS);
}

/** The server stopped (or restarted) a tile's video to save this browser's bandwidth. */
function showVideoPaused(participant, source, paused) {
  const key = `${participant}:${source}`;
  if (paused) state.pausedVideo.add(key);
  else state.pausedVideo.delete(key);
  const entry = state.participants.get(participant);
  const tile = source === "screen" ? state.screens.get(participant) : entry && entry.tile;
  if (!tile) return;
  tile.classList.toggle("bandwidth-paused", paused);
  let note = tile.querySelector(".paused-note");
  if (!note) {
    note = document.createElement("p");
    note.className = "paused-note";
    note.textContent = "Video paused to save bandwidth";
    tile.append(note);
  }
  note.hidden = !paused;
}

function pin(key) {
  state.pinned = state.pinned === key ? null : key;
  for (const tile of $("tiles").children) {
    const pinned = tile.dataset.key === state.pinned;
    tile.classList.toggle("pinned", pinned);
    const button = tile.querySelector(".pin");
    if (button) button.setAttribute("aria-pressed", String(pinned));
    labelTile(tile);
  }
  relayout();
}

function setView(view) {
  state.view = view;
  state.pinned = null;
  pin(null);
}

function setSelfHidden(hidden) {
  state.selfHidden = hidden;
  $("hide-self").setAttribute("aria-pressed", String(hidden));
  if (hidden) notice("Your self view is hidden. The others still see you; show it again from More.");
  relayout();
}

function tileFullscreen(tile) {
  if (document.fullscreenElement === tile) document.exitFullscreen().catch(() => {});
  else tile.requestFullscreen().catch((err) => notice(`Full screen is not available (${err.name}).`));
}

function toggleFullscreen() {
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  else document.documentElement.requestFullscreen().catch((err) => notice(`Full screen is not available (${err.name}).`));
}

// ---------------------------------------------------------------- people

function addParticipant(info, announce) {
  if (state.participants.has(info.id)) return updateParticipant(info);
  const isSelf = state.you && info.id === state.you.id;
  const tile = makeTile(info.id, { self: isSelf });
  tile.dataset.participant = info.id;
  const row = document.createElement("li");
  row.dataset.participant = info.id;
  $("people").append(row);
  state.participants.set(info.id, { info, tile, row });
  if (isSelf) refreshSelfTile();
  updateParticipant(info);
  if (announce) {
    notice(`${info.name} joined.`, [], ARRIVAL_MS);
    chat.system(`${info.name} joined`);
    if (encrypted) showE2eeBanner();
  }
  if (state.pc && state.slots.length) {
    attachRemoteMedia();
    configureLayers();
  }
  relayout();
}

function updateParticipant(info) {
  const entry = state.participants.get(info.id);
  if (!entry) return;
  const before = entry.info;
  entry.info = info;
  const isSelf = state.you && info.id === state.you.id;
  const handMoved = (before.hand ?? null) !== (info.hand ?? null);
  if (isSelf) selfChanged(before, info);
  else if (handMoved && info.hand != null) notice(`${info.name} raised their hand.`, [], ARRIVAL_MS);
  // A hand going up or down moves the others' places: everyone's flags are drawn again.
  if (handMoved || (isSelf && before.host !== info.host)) {
    for (const other of state.participants.values()) renderEntry(other);
    orderPeople();
  } else {
    renderEntry(entry);
  }
  $("people-count").textContent = String(state.participants.size);
  const screen = state.screens.get(info.id);
  if (screen) labelTile(screen, info.name, "'s screen");
  if (state.pc) attachRemoteMedia();
}

/** A participant's tile flags, note and people row, from what the server last said. */
function renderEntry(entry) {
  const info = entry.info;
  const isSelf = state.you && info.id === state.you.id;
  const micOff = info.audio_muted || !info.publishes.includes("mic");
  const camOff = info.video_muted || !info.publishes.includes("camera");
  const place = handPlace(info.id);
  // Names are text, never HTML: textContent everywhere.
  labelTile(entry.tile, info.name, isSelf ? " (you)" : "");
  const flags = entry.tile.querySelector(".flags");
  flags.replaceChildren();
  if (place) flags.append(handFlag(place));
  if (micOff) flags.append(flag("mic-off", "Microphone off"));
  if (camOff) flags.append(flag("cam-off", "Camera off"));
  flags.append(flag("speaking", "Speaking", "speaking-flag"));
  entry.tile.classList.toggle("hand-up", place > 0);
  entry.tile.classList.toggle("no-video", camOff || (isSelf && !state.local.getVideoTracks().length));
  entry.tile.querySelector(".avatar").textContent = (info.name[0] || "?").toUpperCase();
  if (!isSelf) showTileKeyNote(entry);
  renderRow(entry, info, isSelf, micOff, camOff, place);
}

function handPlace(id) {
  const queue = handQueue(state.participants);
  return queue.findIndex(([other]) => other === id) + 1;
}

/** Raised hands first, in the order they went up; then everyone in order of arrival. */
function orderPeople() {
  const raised = handQueue(state.participants).map(([, e]) => e.row);
  const rest = [...state.participants.values()].map((e) => e.row).filter((row) => !raised.includes(row));
  $("people").append(...raised, ...rest);
}

/** Our own record changed: the host role (handed to us, or by us to someone), our hand. */
function selfChanged(before, info) {
  state.you = info;
  if (before.host !== info.host) {
    // Handed on: a reconnection must not make us host again from the key in this tab.
    if (!info.host && state.hostKey) forgetHostKey();
    if (!info.host) {  // what only hosts see goes with the role
      showLobby([]);
      $("recordings").replaceChildren();
      $("recordings-panel").hidden = true;
    }
    showHostControls();
  }
  // Until the server has had our state again after a (re)join, our own intent stands.
  if (state.synced) state.handRaised = info.hand != null;
  showHandButton();
}

function showHostControls() {
  const host = Boolean(state.you && state.you.host);
  for (const el of document.querySelectorAll(".host-only")) el.hidden = !host;
  showRecording(state.recording, false);
}

/** What an end-to-end encrypted meeting's key checks say of someone: null when all is well,
 *  "none" when their link has no key, "other" when it holds another key than ours. */
function keyProblem(info) {
  if (!encrypted || !state.keyCheck || (state.you && info.id === state.you.id)) return null;
  if (!info.key_check) return "none";
  return info.key_check === state.keyCheck ? null : "other";
}

function showTileKeyNote(entry) {
  const { info, tile } = entry;
  const problem = keyProblem(info);
  let text = "";
  if (keyless()) text = "Encrypted: your link has no key.";
  else if (problem === "none") text = `${info.name}'s link has no key: they cannot see or hear anyone here.`;
  else if (problem === "other") text = `${info.name}'s link has a different key: you cannot see or hear each other.`;
  else if (state.undecryptable.has(info.id)) text = `Can't decrypt ${info.name}'s video and sound: their link has a different key, or none.`;
  tile.classList.toggle("undecryptable", Boolean(text));
  const note = tile.querySelector(".tile-note");
  note.hidden = !text;
  note.textContent = text;
}

function renderRow(entry, info, isSelf, micOff, camOff, place) {
  const row = entry.row;
  row.replaceChildren();
  // One line: a long name is cut short, "(you)" and the host tag stay in sight.
  const who = whoIs(info.name);
  if (isSelf) {
    const you = document.createElement("span");
    you.className = "you";
    you.textContent = " (you)";
    who.append(you);
  }
  if (info.host) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "host";
    who.append(tag);
  }
  const speaking = flag("speaking", "speaking", "speaking-flag");
  const status = document.createElement("span");
  status.className = "state";
  status.textContent = `${micOff ? "mic off" : "mic on"} · ${camOff ? "camera off" : "camera on"}`
    + (info.publishes.includes("screen") ? " · sharing" : "");
  const problem = keyProblem(info);
  if (problem === "none") status.textContent += " · no key in their link";
  else if (problem === "other") status.textContent += " · a different key from yours";
  else if (state.undecryptable.has(info.id)) status.textContent += " · can't decrypt their media";
  row.classList.toggle("key-problem", Boolean(problem));
  if (place) row.append(handFlag(place));
  row.append(who, speaking, status);
  if (state.you && state.you.host && !isSelf) {
    if (place) row.append(button("Lower hand", () => send({ type: "lower-hand", id: info.id })));
    const asking = state.asked.has(info.id);
    const ask = button(asking ? "Asked to mute…" : "Ask to mute", () => askToMute(info));
    ask.disabled = asking || micOff;
    row.append(ask);
    if (!info.host) row.append(button("Make host", () => makeHost(info)));
    row.append(button("Remove", () => send({ type: "remove", id: info.id })));
  }
}

/** The name part of a people or lobby row. */
function whoIs(name) {
  const who = document.createElement("span");
  who.className = "who";
  const text = document.createElement("span");
  text.className = "who-name";
  text.textContent = name;
  who.append(text);
  return who;
}

function removeParticipant(id, announce) {
  const entry = state.participants.get(id);
  if (!entry) return;
  entry.tile.remove();
  entry.row.remove();
  state.participants.delete(id);
  removeScreenTile(id);
  if (state.pinned === id) state.pinned = null;
  if (state.speaker === id) state.speaker = null;
  $("people-count").textContent = state.participants.size ? String(state.participants.size) : "";
  state.asked.delete(id);
  if (entry.info.hand != null) for (const other of state.participants.values()) renderEntry(other);
  if (announce) {
    notice(`${entry.info.name} left.`, [], ARRIVAL_MS);
    chat.system(`${entry.info.name} left`);
    if (encrypted) showE2eeBanner();
  }
  for (const key of [...state.pausedVideo]) if (key.startsWith(`${id}:`)) state.pausedVideo.delete(key);
  if (state.pc) {
    attachRemoteMedia();
    configureLayers();
  }
  relayout();
}

// ---------------------------------------------------------------- what the statistics say

async function readStats() {
  const pc = state.pc;
  if (!pc || !state.you) return;
  let reading;
  try {
    reading = await stats.read(pc, receiveSlot, state.you.id, state.audioMuted);
  } catch (err) {
    return;  // the connection closed under us
  }
  if (pc !== state.pc) return;
  let loudest = null;
  for (const [id, level] of reading.levels) {
    if (keyless() && id !== state.you.id) continue;  // levels of noise, not of speech
    if (level >= SPEAKING_LEVEL && (!loudest || level > reading.levels.get(loudest))) loudest = id;
  }
  for (const [id, entry] of state.participants) {
    entry.tile.classList.toggle("speaking", id === loudest);
    entry.row.classList.toggle("speaking", id === loudest);
  }
  // The large tile follows a new speaker only once they have been loudest twice running.
  if (loudest && loudest !== state.you.id) {
    if (loudest === state.candidate && state.speaker !== loudest) {
      state.speaker = loudest;
      if (viewMode() === "speaker") relayout();
    }
    state.candidate = loudest;
  }
  if (reading.quality) showQuality(reading.quality);
  checkDecrypts();
}

const QUALITY_WORDS = { good: "good", fair: "fair", poor: "poor", unknown: "measuring" };

function showQuality(quality) {
  for (const [id, level] of quality) {
    const entry = state.participants.get(id);
    const el = entry && entry.tile.querySelector(".quality");
    if (!el || el.dataset.level === level) continue;
    el.dataset.level = level;
    el.setAttribute("aria-label", `Connection: ${QUALITY_WORDS[level]}`);
    el.title = `Connection: ${QUALITY_WORDS[level]}`;
  }
}

// ---------------------------------------------------------------- end-to-end encryption

/** Tell people plainly when media cannot be decrypted, instead of showing grey tiles. */
function checkDecrypts() {
  if (!encrypted || !state.pc || !state.e2ee) return;
  const counts = new Map();  // participant id -> {ok, failed}
  for (const slot of state.slots) {
    if (slot.direction !== "receive") continue;
    const id = `${state.epoch}:${slot.mid}`;
    const now = state.e2ee.decrypts.get(id);
    const base = state.decryptBase.get(id);
    if (!now || !base || base.participant !== slot.participant) continue;
    const sum = counts.get(slot.participant) || { ok: 0, failed: 0 };
    sum.ok += now.ok - base.ok;
    sum.failed += now.failed - base.failed;
    counts.set(slot.participant, sum);
  }
  let changed = false;
  for (const [id, entry] of state.participants) {
    if (id === state.you.id) continue;
    const sum = counts.get(id);
    const bad = Boolean(sum && sum.ok === 0 && sum.failed >= UNDECRYPTABLE_AFTER);
    if (bad === state.undecryptable.has(id)) continue;
    changed = true;
    if (bad) state.undecryptable.add(id);
    else state.undecryptable.delete(id);
    renderEntry(entry);
  }
  if (changed) showE2eeBanner();
}

/** An end-to-end encrypted meeting joined from a link without its key. */
function keyless() {
  return encrypted && !state.e2ee;
}

function showE2eeBanner() {
  const banner = $("e2ee-banner");
  if (!encrypted) {
    banner.hidden = true;
    return;
  }
  const others = [...state.participants.keys()].filter((id) => id !== state.you.id);
  // Those whose pages hold a key: when none holds ours, ours is the odd one out.
  const checked = others.map((id) => state.participants.get(id).info).filter((info) => info.key_check);
  let text = "";
  if (!state.e2ee) {
    text = "This meeting is end-to-end encrypted and your link has no key: you cannot see, hear or read anyone, "
      + "and they cannot see or hear you. Ask whoever invited you for the full link (it ends in #key=…).";
  } else if (others.length && others.every((id) => state.undecryptable.has(id))
             || (checked.length && checked.every((info) => info.key_check !== state.keyCheck))) {
    text = "The key in your link is not the one the others here use: you cannot see or hear them, and they "
      + "cannot see or hear you. Ask whoever invited you for the full link again.";
  }
  banner.textContent = text;
  banner.hidden = !text;
  relayout();
}

// ---------------------------------------------------------------- lobby and host

function showLocked(locked) {
  $("locked-badge").hidden = !locked;
  $("lock").setAttribute("aria-pressed", String(Boolean(locked)));
  $("lock").dataset.locked = locked ? "true" : "false";
}

function showRecording(recording, changed) {
  if (!recording) return;
  const was = state.recording.active;
  state.recording = recording;
  $("recording-badge").hidden = !recording.active;
  $("recording-notice").hidden = !recording.active;
  const control = $("record");
  // A meeting that cannot be recorded (end-to-end encrypted) shows no record button at all.
  control.hidden = !(state.you && state.you.host && recording.available);
  control.querySelector(".label").textContent = recording.active ? "Stop recording" : "Start recording";
  control.classList.toggle("active", recording.active);
  control.disabled = false;
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
  anchor.rel = "noopener noreferrer";
  anchor.textContent = `Recording of ${new Date(link.started_at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" })}`;
  const until = document.createElement("span");
  until.className = "until";
  until.textContent = `available until ${link.delete_on}`;
  item.append(anchor, until);
  list.prepend(item);
  $("recordings-panel").hidden = false;
  if (fresh) notice("The recording is ready: its link is under People, Recordings.");
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
  row.append(whoIs(person.name),
    button("Admit", () => send({ type: "admit", id: person.id }), "primary"),
    button("Deny", () => send({ type: "deny", id: person.id })));
  $("lobby").append(row);
  $("lobby-panel").hidden = false;
  relayout();
  if (announce) notice(`${person.name} is waiting to join.`);
}

function lobbyRemoved(id) {
  for (const row of $("lobby").querySelectorAll("li")) if (row.dataset.waiting === id) row.remove();
  $("lobby-panel").hidden = !$("lobby").children.length;
  relayout();
}

function showWaiting(text, hostsPresent) {
  $("waiting-message").textContent = text;
  $("waiting").classList.toggle("hostless", hostsPresent === false);
  show("waiting");
  setStatus("");
  if (state.status) showJoinStatus(state.status);
}

/** Whether the meeting records, is locked, has a host: for whoever has not joined yet. */
function showJoinStatus(status) {
  state.status = status;
  if (!$("room").hidden) return;
  $("recording-notice").hidden = !status.recording;
  const waiting = !$("waiting").hidden;
  // Before joining, the header's badges say what this message says (not what a room left before did).
  $("locked-badge").hidden = !status.locked;
  $("recording-badge").hidden = !status.recording;
  const asHost = Boolean(state.hostKey);
  showStatus($("join-status"), statusLines(status, waiting, asHost), status.locked && !status.hosts_present && !asHost);
}

/** People knock on a locked meeting and nobody here can let them in (0: that is over). */
function showKnocking(count) {
  const banner = $("knocking");
  const was = !banner.hidden;
  banner.textContent = count ? knockingText(count) : "";
  banner.hidden = !count;
  if (was !== Boolean(count)) relayout();
}

/** A host asked us to mute: we are asked, not muted behind our back, and the host is told. */
function muteRequested(by, request) {
  const answer = (accepted) => send({ type: "mute-answer", request, answer: accepted ? "accepted" : "declined" });
  if (state.audioMuted || !state.hasMic) {
    answer(true);
    return notice(`${by} asked you to mute. Your microphone is already off.`);
  }
  const prompt = notice(`${by} asks you to mute your microphone.`, [
    ["Mute", () => { if (!state.audioMuted) toggleAudio(); answer(true); }],
    ["Stay unmuted", () => answer(false)],
  ]);
  prompt.classList.add("prompt");
}

function askToMute(info) {
  state.asked.add(info.id);
  send({ type: "ask-mute", id: info.id });
  renderEntry(state.participants.get(info.id));
  notice(`Asked ${info.name} to mute. You will see their answer here.`, [], ARRIVAL_MS);
}

const MUTE_ANSWERS = {
  accepted: (name) => `${name} muted their microphone, as you asked.`,
  declined: (name) => `${name} chose to stay unmuted.`,
  "no-answer": (name) => `${name} did not answer your request to mute.`,
};

function muteAnswered(message) {
  state.asked.delete(message.id);
  const entry = state.participants.get(message.id);
  if (entry) renderEntry(entry);
  notice((MUTE_ANSWERS[message.answer] || MUTE_ANSWERS["no-answer"])(message.name));
}

/** A host muted everyone: this page mutes itself and says who did; unmuting stays ours. */
function mutedBy(by) {
  if (!state.hasMic || state.audioMuted) return;
  toggleAudio();
  notice(`${by} muted everyone. You can unmute when you need to.`);
}

function muteAll() {
  send({ type: "mute-all" });
  notice("Everyone else was muted. They can unmute themselves.", [], ARRIVAL_MS);
}

function makeHost(info) {
  if (!confirm(`Make ${info.name} the host? You will no longer be one.`)) return;
  send({ type: "make-host", id: info.id });
}

function madeHost(message) {
  notice(`${message.by} made you the host: you can let people in, record and end the meeting.`);
  for (const link of message.recordings || []) addRecordingLink(link, false);
}

// ---------------------------------------------------------------- hands and reactions

function showHandButton() {
  const el = $("hand");
  const label = state.handRaised ? "Lower hand" : "Raise hand";
  el.setAttribute("aria-pressed", String(state.handRaised));
  el.querySelector(".label").textContent = label;
  el.title = label;
}

function toggleHand() {
  state.handRaised = !state.handRaised;
  showHandButton();
  send({ type: "hand", raised: state.handRaised });
}

function togglePicker() {
  const open = $("reactions").hidden;
  closeMenus();
  if (!open) return;
  $("reactions").hidden = false;
  $("react").setAttribute("aria-expanded", "true");
  $("reactions").querySelector("button").focus();
}

async function sendReaction(emoji) {
  closeMenus(true, "react");
  if (!encrypted) return send({ type: "react", emoji });
  if (!state.e2ee) return notice("You cannot react here: your link has no key.");
  send({ type: "react", ciphertext: await state.e2ee.encryptReaction(emoji) });
}

async function reacted(message) {
  let emoji = message.emoji;
  if (message.ciphertext !== undefined) emoji = state.e2ee ? await state.e2ee.decryptReaction(message.ciphertext) : null;
  const entry = state.participants.get(message.from);
  // Only the fixed set is shown, whatever arrives (a sealed one could hold anything).
  if (!entry || !isReaction(emoji)) return;
  const you = state.you && message.from === state.you.id;
  showReaction(entry.tile, emoji, you ? "You" : entry.info.name, $("reactions-live"));
}

function ended(text) {
  state.left = true;
  const ws = state.ws;
  state.ws = null;
  state.epoch += 1;  // whatever is still queued belongs to a connection that is over
  if (ws) ws.close();
  teardown();
  stopScreen(false);
  // Leaving turns the camera and microphone off; Rejoin opens them again.
  for (const track of state.local.getTracks()) track.stop();
  state.local = new MediaStream();
  meter.detach();
  closeMenus();
  if ($("settings").open) $("settings").close();
  show("left");
  // Out of the meeting, the header no longer says what the room was (locked, recording).
  $("locked-badge").hidden = true;
  $("recording-badge").hidden = true;
  $("left-message").textContent = text;
  setStatus("");
}

// ---------------------------------------------------------------- chat

async function sendChat(event) {
  event.preventDefault();
  const input = $("message");
  const text = input.value.trim();
  if (!text) return;
  if (encrypted) {
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
  chat.message(message.name, message.at, String(text), state.you && message.from === state.you.id);
}

// ---------------------------------------------------------------- panels and menus

function setSide(tab, chosen = true) {
  if (chosen) state.sideChosen = true;
  state.side = tab;
  $("side").hidden = !tab;
  $("people-panel").hidden = tab !== "people";
  $("chat-panel").hidden = tab !== "chat";
  $("side-title").textContent = tab === "chat" ? "Chat" : "People";
  $("people-toggle").setAttribute("aria-pressed", String(tab === "people"));
  $("chat-toggle").setAttribute("aria-pressed", String(tab === "chat"));
  $("room").classList.toggle("side-open", Boolean(tab));
  if (tab === "chat") chat.seen();
  relayout();
}

function toggleSide(tab) {
  setSide(state.side === tab ? null : tab);
  if (state.side === "chat" && !NARROW.matches) $("message").focus();
}

function toggleMenu() {
  const open = $("more-menu").hidden;
  closeMenus();
  if (!open) return;
  $("more-menu").hidden = false;
  $("more").setAttribute("aria-expanded", "true");
  const first = $("more-menu").querySelector("button:not([hidden])");
  if (first) first.focus();
}

function closeMenus(returnFocus = false, focusOn = "more") {
  for (const [menu, opener] of [["more-menu", "more"], ["reactions", "react"]]) {
    if ($(menu).hidden) continue;
    $(menu).hidden = true;
    $(opener).setAttribute("aria-expanded", "false");
    if (returnFocus && opener === focusOn) $(opener).focus();
  }
}

function openSettings() {
  closeMenus();
  $("settings-slot").append($("devices"));
  refreshDevices();
  meter.attach(state.local.getAudioTracks()[0]);
  $("settings").showModal();
}

// ---------------------------------------------------------------- controls

function sendMediaState() {
  send({ type: "media", audio_muted: state.audioMuted, video_muted: state.videoMuted });
}

function updateToggles() {
  const mic = state.hasMic && !state.audioMuted;
  const cam = state.hasCamera && !state.videoMuted;
  for (const el of [$("mute"), $("pre-mic")]) {
    el.setAttribute("aria-pressed", String(mic));
    el.disabled = !state.hasMic;
    el.title = !state.hasMic ? "No microphone" : mic ? "Turn off microphone (Ctrl+D)" : "Turn on microphone (Ctrl+D)";
  }
  for (const el of [$("camera"), $("pre-cam")]) {
    el.setAttribute("aria-pressed", String(cam));
    el.disabled = !state.hasCamera;
    el.title = !state.hasCamera ? "No camera" : cam ? "Turn off camera (Ctrl+E)" : "Turn on camera (Ctrl+E)";
  }
}

function toggleAudio() {
  if (!state.hasMic) return;
  state.audioMuted = !state.audioMuted;
  for (const track of state.local.getAudioTracks()) track.enabled = !state.audioMuted;
  updateToggles();
  sendMediaState();
}

/** Camera off releases the camera (its light goes out) and sends nothing; on opens it again. */
async function toggleVideo() {
  if (!state.hasCamera || state.busy) return;
  state.busy = true;
  try {
    if (state.videoMuted) {
      const track = await openTrack("videoinput", state.prefs.camera);
      state.videoMuted = false;
      await swapLocalTrack("video", track);
    } else {
      state.videoMuted = true;
      await swapLocalTrack("video", null);
    }
  } catch (err) {
    notice(`The camera could not be opened (${err.name}).`);
  } finally {
    state.busy = false;
  }
  updateToggles();
  sendMediaState();
  if (state.you) updateParticipant({ ...state.participants.get(state.you.id).info, video_muted: state.videoMuted });
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
  $("share").querySelector(".label").textContent = "Stop sharing";
  $("share").classList.add("active");
  send({ type: "publish", source: "screen" });
  attachRemoteMedia();
}

function stopScreen(tell) {
  if (!state.screen) return;
  for (const track of state.screen.getTracks()) track.stop();
  state.screen = null;
  $("share").querySelector(".label").textContent = "Share screen";
  $("share").classList.remove("active");
  if (tell) send({ type: "unpublish", source: "screen" });
  showOwnScreen();
  if (state.pc) attachRemoteMedia();
}

function leave() {
  send({ type: "leave" });
  ended("You left the meeting.");
}

// The preview, devices and recording notice are one set of elements, moved to the screen
// being shown (pre-join, lobby, settings).
function show(section) {
  for (const id of ["prejoin", "waiting", "room", "left"]) $(id).hidden = id !== section;
  if (section === "prejoin" || section === "waiting") {
    const card = $(section);
    card.querySelector(".slot-preview").append($("preview-box"));
    card.querySelector(".slot-notice").append($("recording-notice"), $("join-status"));
    if (section === "prejoin") card.querySelector(".slot-devices").append($("devices"));
    meter.attach(state.local.getAudioTracks()[0]);
    if (state.status) showJoinStatus(state.status);
  } else if (section === "room") {
    meter.detach();
    relayout();
  }
}

function setStatus(text) {
  $("status").textContent = text;
}

let mediaReady = null;

async function join(event) {
  event.preventDefault();
  $("join").disabled = true;
  await mediaReady;  // publish what the devices give, even when Join is clicked at once
  await state.keyCheckReady;
  $("join").disabled = false;
  state.name = $("name").value.trim();
  localStorage.setItem("meetnow.name", state.name);
  state.left = false;
  state.resume = null;
  state.handRaised = false;
  showHandButton();
  chat.clear();
  setStatus("Connecting…");
  // The socket that watched the status asks to join; without one, a new socket does.
  state.joining = true;
  const ws = state.ws;
  if (ws && ws.readyState === WebSocket.OPEN) sendJoin();
  else if (!ws || ws.readyState !== WebSocket.CONNECTING) connect(true);
}

function rejoin() {
  // What the pre-join screen says comes from this connection's status, once it is told.
  state.status = null;
  $("join-status").hidden = true;
  $("recording-notice").hidden = true;
  show("prejoin");
  mediaReady = prepareMedia();
  state.watchRetries = 0;
  connect(false);
}

function onKey(event) {
  if (event.key === "Escape" && !($("more-menu").hidden && $("reactions").hidden)) {
    closeMenus(true, $("reactions").hidden ? "more" : "react");
    return;
  }
  if (!(event.ctrlKey || event.metaKey) || event.altKey || event.shiftKey) return;
  if (!$("left").hidden) return;
  const key = event.key.toLowerCase();
  if (key === "d") {
    event.preventDefault();  // instead of the browser's bookmark shortcut
    toggleAudio();
  } else if (key === "e") {
    event.preventDefault();
    toggleVideo();
  }
}

$("join-form").addEventListener("submit", join);
$("chat-form").addEventListener("submit", sendChat);
$("mute").addEventListener("click", toggleAudio);
$("pre-mic").addEventListener("click", toggleAudio);
$("camera").addEventListener("click", toggleVideo);
$("pre-cam").addEventListener("click", toggleVideo);
$("share").addEventListener("click", toggleScreen);
$("people-toggle").addEventListener("click", () => toggleSide("people"));
$("chat-toggle").addEventListener("click", () => toggleSide("chat"));
$("side-close").addEventListener("click", () => setSide(null));
$("more").addEventListener("click", toggleMenu);
$("more-menu").addEventListener("click", (event) => { if (event.target.closest("button")) closeMenus(); });
document.addEventListener("click", (event) => {
  if (!event.target.closest(".more-wrap, .react-wrap")) closeMenus();
});
for (const el of document.querySelectorAll(".copy-invite")) el.addEventListener("click", copyInvite);
$("view-grid").addEventListener("click", () => setView("grid"));
$("view-speaker").addEventListener("click", () => setView("speaker"));
$("hide-self").addEventListener("click", () => setSelfHidden(!state.selfHidden));
$("fullscreen").addEventListener("click", toggleFullscreen);
document.addEventListener("fullscreenchange", () => {
  $("fullscreen").setAttribute("aria-pressed", String(document.fullscreenElement === document.documentElement));
  relayout();
});
$("open-settings").addEventListener("click", openSettings);
$("settings").addEventListener("close", () => { if (!$("room").hidden) meter.detach(); });
$("camera-select").addEventListener("change", (e) => useDevice("videoinput", e.target.value));
$("mic-select").addEventListener("change", (e) => useDevice("audioinput", e.target.value));
$("speaker-select").addEventListener("change", (e) => useDevice("audiooutput", e.target.value));
$("lock").addEventListener("click", () => send({ type: "lock", locked: $("lock").dataset.locked !== "true" }));
$("record").addEventListener("click", () => {
  $("record").disabled = true;  // until the server says what happened
  send({ type: state.recording.active ? "stop-recording" : "start-recording" });
  setTimeout(() => { $("record").disabled = false; }, 3000);
});
$("end").addEventListener("click", () => {
  if (confirm("End the meeting for everyone?")) send({ type: "end-meeting" });
});
$("leave").addEventListener("click", leave);
$("hand").addEventListener("click", toggleHand);
$("react").addEventListener("click", togglePicker);
buildPicker($("reactions"), sendReaction);
$("mute-all").addEventListener("click", muteAll);
$("cancel-wait").addEventListener("click", leave);
$("rejoin").addEventListener("click", rejoin);
document.addEventListener("keydown", onKey);
new ResizeObserver(relayout).observe($("tiles"));
NARROW.addEventListener("change", () => { if (NARROW.matches && state.side && !state.sideChosen) setSide(null, false); });
window.addEventListener("pagehide", () => send({ type: "leave" }));

// For debugging from the console (and for tests): the live connection and who is shown.
window.meetnow = {
  get pc() { return state.pc; },
  get slots() { return state.slots; },
  get participants() { return state.participants; },
  get layoutPending() { return Boolean(layoutFrame); },
  get meterAudio() { return meter.audioState; },
};

updateToggles();
mediaReady = prepare();
