// Encrypts outgoing and decrypts incoming encoded media frames (AES-GCM, 256-bit key).
// Frame layout: [clear codec header][ciphertext + 16-byte tag][12-byte IV]. The clear header
// (VP8: 10 bytes of a key frame, 3 of a delta frame, RFC 6386 9.1; Opus: the TOC byte,
// RFC 6716 3.1) lets the server spot key frames and the decoder parse what it must; it is
// authenticated as additional data, so it cannot be altered either.
"use strict";

importScripts("/static/e2ee-keys.js");
const IV_BYTES = 12;
const TAG_BYTES = 16;
let keyPromise = null;
// IV = 8 random bytes per sender session + a 32-bit frame counter: with one key shared by
// everyone in a permanent meeting, no two senders may ever produce the same IV.
const salt = crypto.getRandomValues(new Uint8Array(8));
let counter = 0;
// Per receiving m-line: frames decrypted and frames refused, told to the page once a second
// while they change, so it can say plainly when a link's key is not the meeting's.
const decrypts = new Map();
const REPORT_EVERY_MS = 1000;
let reportTimer = 0;

function count(id, ok) {
  const entry = decrypts.get(id) || { ok: 0, failed: 0 };
  if (ok) entry.ok += 1;
  else entry.failed += 1;
  decrypts.set(id, entry);
  if (!reportTimer) {
    reportTimer = setTimeout(() => {
      reportTimer = 0;
      for (const [key, value] of decrypts) postMessage({ type: "decrypts", id: key, ...value });
    }, REPORT_EVERY_MS);
  }
}

function clearBytes(frame, kind) {
  if (kind === "audio") return 1;
  return frame.type === "key" ? 10 : 3;
}

async function encrypt(frame, controller, kind) {
  const data = new Uint8Array(frame.data);
  const n = Math.min(clearBytes(frame, kind), data.length);
  const iv = new Uint8Array(IV_BYTES);
  iv.set(salt);
  new DataView(iv.buffer).setUint32(8, counter);
  counter = (counter + 1) >>> 0;
  const sealed = new Uint8Array(await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: data.subarray(0, n) }, await keyPromise, data.subarray(n)));
  const out = new Uint8Array(n + sealed.length + IV_BYTES);
  out.set(data.subarray(0, n));
  out.set(sealed, n);
  out.set(iv, n + sealed.length);
  frame.data = out.buffer;
  controller.enqueue(frame);
}

async function decrypt(frame, controller, kind, id) {
  const data = new Uint8Array(frame.data);
  const n = clearBytes(frame, kind);
  if (data.length < n + TAG_BYTES + IV_BYTES) {  // not ours: drop, never feed the decoder
    count(id, false);
    return;
  }
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: data.subarray(data.length - IV_BYTES), additionalData: data.subarray(0, n) },
      await keyPromise, data.subarray(n, data.length - IV_BYTES));
    const out = new Uint8Array(n + plain.byteLength);
    out.set(data.subarray(0, n));
    out.set(new Uint8Array(plain), n);
    frame.data = out.buffer;
    controller.enqueue(frame);
    count(id, true);
  } catch (err) {
    // Wrong key or a damaged frame: dropping it is all a receiver can do.
    count(id, false);
  }
}

function pipe(readable, writable, direction, kind, id) {
  const step = direction === "send" ? encrypt : decrypt;
  readable
    .pipeThrough(new TransformStream({ transform: (frame, controller) => step(frame, controller, kind, id) }))
    .pipeTo(writable)
    .catch(() => {});
}

onmessage = (event) => {
  const message = event.data;
  if (message.type === "key") keyPromise = e2eeDeriveKey(message.secret, "media");
  else if (message.type === "streams") pipe(message.readable, message.writable, message.direction, message.kind, message.id);
};

onrtctransform = (event) => {
  const { readable, writable, options } = event.transformer;
  pipe(readable, writable, options.direction, options.kind, options.id);
};
