// Meeting page: pre-join, then one peer connection to the server, which always offers.
// The page answers offers, trickles its candidates, and shows a tile per participant.
"use strict";

const $ = (id) => document.getElementById(id);
const app = $("app");
const meetingId = app.dataset.meetingId;

const PING_EVERY_MS = 5000;
const SILENCE_LIMIT_MS = 12000;  // no message for this long: the connection is dead

const state = {
  name: "",
  local: new MediaStream(),   // what this browser can publish (may be empty: listen-only)
  audioMuted: false,
  videoMuted: false,
  ws: null,
  pc: null,
  you: null,
  resume: null,
  participants: new Map(),    // id -> {info, tile}
  slots: [],                  // the m-lines of the last offer
  chain: Promise.resolve(),   // signaling messages are handled strictly in order
  left: false,
  retries: 0,
  lastMessage: 0,
  pinger: null,
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

async function prepare() {
  $("name").value = localStorage.getItem("meetnow.name") || "";
  if (!navigator.mediaDevices || !window.RTCPeerConnection) {
    showNote("This browser cannot join meetings (no WebRTC).");
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
    send({ type: "join", name: state.name, publish: published(), ...(state.resume ? { resume: state.resume } : {}) });
  };
  ws.onmessage = (event) => {
    state.lastMessage = Date.now();
    const message = JSON.parse(event.data);
    state.chain = state.chain.then(() => handle(message)).catch((err) => console.error("signaling", err));
  };
  ws.onclose = () => {
    if (state.ws === ws) lostConnection();
  };
  clearInterval(state.pinger);
  state.pinger = setInterval(() => {
    if (Date.now() - state.lastMessage > SILENCE_LIMIT_MS) ws.close();
    else send({ type: "ping" });
  }, PING_EVERY_MS);
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
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
  clearInterval(state.pinger);
  if (state.pc) state.pc.close();
  state.pc = null;
  state.slots = [];
  for (const id of [...state.participants.keys()]) removeParticipant(id);
}

async function handle(message) {
  switch (message.type) {
    case "welcome": return welcome(message);
    case "offer": return answer(message);
    case "participant-joined": return addParticipant(message.participant, false);
    case "participant-updated": return updateParticipant(message.participant);
    case "participant-left": return removeParticipant(message.id);
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
  state.pc = newPeerConnection(message.ice_servers);
  addParticipant(message.you, true);
  for (const participant of message.participants) addParticipant(participant, false);
  sendMediaState();
}

function newPeerConnection(iceServers) {
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
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
      await transceiver.sender.replaceTrack(track);
    } else {
      transceiver.direction = "recvonly";
    }
  }
  await pc.setLocalDescription(await pc.createAnswer());
  send({ type: "answer", sdp: pc.localDescription.sdp });
  attachRemoteMedia();
}

function localTrack(source) {
  if (source === "mic") return state.local.getAudioTracks()[0] || null;
  if (source === "camera") return state.local.getVideoTracks()[0] || null;
  return null;
}

function attachRemoteMedia() {
  const tracks = new Map();  // participant id -> [tracks]
  for (const transceiver of state.pc.getTransceivers()) {
    const slot = state.slots.find((s) => s.mid === transceiver.mid && s.direction === "receive");
    if (!slot) continue;
    if (!tracks.has(slot.participant)) tracks.set(slot.participant, []);
    tracks.get(slot.participant).push(transceiver.receiver.track);
  }
  for (const [id, entry] of state.participants) {
    if (id === state.you.id) continue;
    const wanted = tracks.get(id) || [];
    const video = entry.tile.querySelector("video");
    const current = video.srcObject ? video.srcObject.getTracks() : [];
    if (wanted.length !== current.length || wanted.some((t) => !current.includes(t))) {
      video.srcObject = wanted.length ? new MediaStream(wanted) : null;
    }
  }
}

function serverError(message) {
  if (message.code === "meeting-full") {
    state.left = true;
    showLeft(message.message);
    return;
  }
  console.warn("server refused a message:", message.code, message.message);
}

// ---------------------------------------------------------------- tiles

function addParticipant(info, isSelf) {
  if (state.participants.has(info.id)) return updateParticipant(info);
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
  state.participants.set(info.id, { info, tile });
  updateParticipant(info);
  if (state.pc && state.slots.length) attachRemoteMedia();
}

function updateParticipant(info) {
  const entry = state.participants.get(info.id);
  if (!entry) return;
  entry.info = info;
  const isSelf = state.you && info.id === state.you.id;
  const label = entry.tile.querySelector(".name");
  label.textContent = isSelf ? `${info.name} (you)` : info.name;  // textContent: names are never HTML
  if (info.audio_muted || !info.publishes.includes("mic")) {
    const flag = document.createElement("span");
    flag.className = "muted-flag";
    flag.textContent = "muted";
    flag.title = "Microphone off";
    label.append(flag);
  }
  const noVideo = info.video_muted || !info.publishes.includes("camera");
  entry.tile.classList.toggle("no-video", noVideo);
  entry.tile.dataset.initial = (info.name[0] || "?").toUpperCase();
}

function removeParticipant(id) {
  const entry = state.participants.get(id);
  if (!entry) return;
  entry.tile.remove();
  state.participants.delete(id);
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

function leave() {
  state.left = true;
  send({ type: "leave" });
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  teardown();
  showLeft("You left the meeting.");
}

function showLeft(text) {
  $("room").hidden = true;
  $("prejoin").hidden = true;
  $("left").hidden = false;
  $("left-message").textContent = text;
  setStatus("");
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
  $("prejoin").hidden = true;
  $("left").hidden = true;
  $("room").hidden = false;
  $("mute").disabled = !state.local.getAudioTracks().length;
  $("camera").disabled = !state.local.getVideoTracks().length;
  setStatus("Connecting…");
  connect();
}

$("join-form").addEventListener("submit", join);
$("mute").addEventListener("click", toggleAudio);
$("camera").addEventListener("click", toggleVideo);
$("leave").addEventListener("click", leave);
$("rejoin").addEventListener("click", () => {
  $("left").hidden = true;
  $("prejoin").hidden = false;
});
window.addEventListener("pagehide", () => send({ type: "leave" }));

// For debugging from the console (and for tests): the live connection and who is shown.
window.meetnow = {
  get pc() { return state.pc; },
  get slots() { return state.slots; },
  get participants() { return state.participants; },
};

const mediaReady = prepare();
