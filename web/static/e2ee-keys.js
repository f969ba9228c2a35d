// The end-to-end key as both the page and its encryption worker derive it: the secret from
// the link's fragment (base64url) through HKDF-SHA-256 into one AES-GCM key per purpose.
"use strict";

const E2EE_SALT = new TextEncoder().encode("meetnow-e2ee-v1");

function e2eeKeyBytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function e2eeDeriveKey(secret, purpose) {
  const base = await crypto.subtle.importKey("raw", e2eeKeyBytes(secret), "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: E2EE_SALT, info: new TextEncoder().encode(purpose) },
    base, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}
