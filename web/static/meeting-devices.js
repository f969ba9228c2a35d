// Cameras, microphones and speakers: opening them, listing them for the pickers, remembering
// the choice in this browser, and a sound meter so people can see their microphone works.

const PREFS_KEY = "meetnow.devices";

/** Whether this browser can choose where a media element plays (speaker picker). */
export const canPickSpeaker = typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype;

/** The devices chosen last time in this browser: {camera, mic, speaker} ids (any may be absent). */
export function loadPrefs() {
  try {
    const stored = JSON.parse(localStorage.getItem(PREFS_KEY) || "{}");
    return stored && typeof stored === "object" ? stored : {};
  } catch (err) {
    return {};
  }
}

export function savePrefs(prefs) {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch (err) {
    // Private modes may refuse storage: the choice then lasts for this page only.
  }
}

function constraint(id) {
  return id ? { deviceId: { ideal: id } } : true;
}

/** Open microphone and camera, then each alone: a missing or refused device must not keep
 *  anyone out. Returns {stream, note} where note says what is missing and why. */
export async function acquire(prefs) {
  const audio = constraint(prefs.mic);
  const video = constraint(prefs.camera);
  const attempts = [
    [{ audio, video }, ""],
    [{ audio }, "No camera available: you will join with audio only"],
    [{ video }, "No microphone available: you will join with video only"],
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

/** One fresh track from a given device ("audioinput" or "videoinput"). */
export async function openTrack(kind, deviceId) {
  const wanted = deviceId ? { deviceId: { exact: deviceId } } : true;
  const stream = await navigator.mediaDevices.getUserMedia(kind === "audioinput" ? { audio: wanted } : { video: wanted });
  return stream.getTracks()[0];
}

/** Devices by kind, as the browser lists them once it has been granted access. */
export async function listDevices() {
  const byKind = { audioinput: [], videoinput: [], audiooutput: [] };
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return byKind;
  for (const device of await navigator.mediaDevices.enumerateDevices()) {
    if (byKind[device.kind] && device.deviceId) byKind[device.kind].push(device);
  }
  return byKind;
}

/** Fill a <select> with devices, selecting `current`; labels are text, never HTML. */
export function fillSelect(select, devices, current, noun) {
  select.replaceChildren();
  devices.forEach((device, i) => {
    const option = document.createElement("option");
    option.value = device.deviceId;
    option.textContent = device.label || `${noun} ${i + 1}`;
    select.append(option);
  });
  if (current && devices.some((d) => d.deviceId === current)) select.value = current;
  select.disabled = devices.length < 2;
}

/** The device a live track is reading from, if the browser says. */
export function deviceOf(track) {
  if (!track || !track.getSettings) return "";
  return track.getSettings().deviceId || "";
}

/** A microphone level bar: reads the track through Web Audio and shows the level in
 *  --level (0..1) on the element, and as aria-valuenow a few times a second. */
export class Meter {
  constructor(el) {
    this.el = el;
    this.context = null;
    this.source = null;
    this.analyser = null;
    this.frame = 0;
    this.lastAria = 0;
    this.samples = null;
    // Browsers start audio contexts suspended until someone interacts with the page. Only a
    // meter that is showing wants its context running.
    const resume = () => {
      if (this.source && this.context.state === "suspended") this.context.resume().catch(() => {});
    };
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, resume, { capture: true });
  }

  attach(track) {
    this.detach();
    if (!track || !window.AudioContext) return;
    if (!this.context) this.context = new AudioContext();
    if (this.context.state === "suspended") this.context.resume().catch(() => {});
    this.source = this.context.createMediaStreamSource(new MediaStream([track]));
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 512;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    const tick = () => {
      this.frame = requestAnimationFrame(tick);
      this.analyser.getFloatTimeDomainData(this.samples);
      let sum = 0;
      for (const s of this.samples) sum += s * s;
      // RMS to a 0..1 scale that moves visibly for speech (about -50 dBFS to 0).
      const db = 10 * Math.log10(sum / this.samples.length + 1e-12);
      const level = Math.max(0, Math.min(1, (db + 50) / 50));
      this.show(track.enabled ? level : 0);
    };
    tick();
  }

  show(level) {
    this.el.style.setProperty("--level", level.toFixed(3));
    const now = performance.now();
    if (now - this.lastAria > 250) {
      this.lastAria = now;
      this.el.setAttribute("aria-valuenow", String(Math.round(level * 100)));
    }
  }

  detach() {
    cancelAnimationFrame(this.frame);
    if (this.source) this.source.disconnect();
    this.source = null;
    this.analyser = null;
    // A running context renders (silence) at the sound card's rate until closed or
    // suspended: in the room that is a second audio stream for the whole meeting, on a
    // phone's battery.
    if (this.context && this.context.state === "running") this.context.suspend().catch(() => {});
    this.show(0);
  }

  /** Whether the meter's audio context is rendering ("running"), or "none" made yet. */
  get audioState() {
    return this.context ? this.context.state : "none";
  }
}
