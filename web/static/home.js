// Home page: "Meet now" mints a meeting and takes its maker in as host.
"use strict";

const form = document.getElementById("meet-now");
if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("error");
    error.hidden = true;
    const title = document.getElementById("title").value.trim();
    const e2ee = document.getElementById("e2ee").checked;
    try {
      const response = await fetch("/api/meetings", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...(title ? { title } : {}), ...(e2ee ? { e2ee } : {}) }),
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      // The host link carries the host key in its fragment; it never reaches the server's logs.
      // An end-to-end key is made here, in this browser, and travels only in the fragment too.
      // Go by path, so the page works on whatever address this browser used to reach it.
      const target = new URL(body.host_url);
      const key = e2ee ? `&key=${E2EE.newKey()}` : "";
      window.location.assign(target.pathname + target.hash + key);
    } catch (err) {
      error.textContent = `Could not start a meeting: ${err.message}`;
      error.hidden = false;
    }
  });
}
