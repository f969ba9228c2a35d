// End-to-end encryption for meetings that ask for it. The key lives only in the URL fragment
// (#key=...), which browsers never send to a server. Media frames are encrypted in a worker
// with WebRTC encoded transforms (AES-GCM), keeping the few codec header bytes the forwarding
// server and the decoders need in clear; chat is encrypted with a key derived from the same
// secret, and so are reactions. The server forwards what it cannot read. Each page also
// sends a short key check when it joins, so everyone sees who holds another key, or none.
"use strict";

const E2EE = (() => {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  function supported() {
    return "RTCRtpScriptTransform" in window || "createEncodedStreams" in RTCRtpSender.prototype;
  }

  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // First 8 bytes of HMAC-SHA256(key, "meetnow key check"), in hex: equal for equal keys, and
  // of no use for finding a 256-bit random key.
  async function keyCheck(secret) {
    const key = await crypto.subtle.importKey("raw", e2eeKeyBytes(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode("meetnow key check")));
    return [...mac.subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  function toBase64(bytes) {
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
  }

  class Session {
    constructor(secret) {
      this.secret = secret;
      this.chatKey = e2eeDeriveKey(secret, "chat");
      this.reactionKey = e2eeDeriveKey(secret, "reaction");
      // null when the link's key cannot even be read: the page then joins as one without a key.
      this.keyCheck = keyCheck(secret).catch(() => null);
      this.worker = new Worker("/static/e2ee-worker.js");
      this.worker.postMessage({ type: "key", secret });
      this.attached = new WeakSet();
      // Frames decrypted and refused per receiving m-line, as the worker counts them: a
      // receiver whose frames all fail holds a different key (or none) from the sender's.
      this.decrypts = new Map();
      this.worker.onmessage = (event) => {
        const message = event.data;
        if (message && message.type === "decrypts") this.decrypts.set(message.id, { ok: message.ok, failed: message.failed });
      };
      // Chromium's older createEncodedStreams path is used where it exists: on Chromium 156 a
      // receiver's RTCRtpScriptTransform was seen to get no frames at all from this server.
      // Firefox and Safari have only RTCRtpScriptTransform.
      this.useScriptTransform = !("createEncodedStreams" in RTCRtpSender.prototype);
    }

    // Only the legacy path needs a flag on the peer connection.
    peerConfig() {
      return this.useScriptTransform ? {} : { encodedInsertableStreams: true };
    }

    attach(endpoint, direction, kind, id) {
      if (this.attached.has(endpoint)) return;
      this.attached.add(endpoint);
      const options = { direction, kind, id: String(id) };
      if (this.useScriptTransform) {
        endpoint.transform = new RTCRtpScriptTransform(this.worker, options);
      } else {
        const { readable, writable } = endpoint.createEncodedStreams();
        this.worker.postMessage({ type: "streams", readable, writable, ...options }, [readable, writable]);
      }
    }

    encryptChat(text) {
      return seal(this.chatKey, text);
    }

    decryptChat(ciphertext) {
      return open(this.chatKey, ciphertext);
    }

    // Reactions have a key of their own: a chat message relayed as a reaction, or the other
    // way round, does not decrypt.
    encryptReaction(emoji) {
      return seal(this.reactionKey, emoji);
    }

    decryptReaction(ciphertext) {
      return open(this.reactionKey, ciphertext);
    }
  }

  async function seal(keyPromise, text) {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, await keyPromise, encoder.encode(text)));
    const out = new Uint8Array(12 + sealed.length);
    out.set(iv);
    out.set(sealed, 12);
    return toBase64(out);
  }

  async function open(keyPromise, ciphertext) {
    try {
      const raw = Uint8Array.from(atob(ciphertext), (c) => c.charCodeAt(0));
      const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: raw.subarray(0, 12) }, await keyPromise, raw.subarray(12));
      return decoder.decode(plain);
    } catch (err) {
      return null;
    }
  }

  return { supported, newKey, keyCheck, Session };
})();
