// Meeting page: pre-join (name, camera preview).
"use strict";

const app = document.getElementById("app");
const nameInput = document.getElementById("name");
const deviceNote = document.getElementById("device-note");

nameInput.value = localStorage.getItem("meetnow.name") || "";

async function startPreview() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    document.getElementById("preview").srcObject = stream;
  } catch (err) {
    deviceNote.textContent = `Camera or microphone unavailable (${err.name}).`;
    deviceNote.hidden = false;
  }
}

document.getElementById("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("meetnow.name", nameInput.value.trim());
});

startPreview();
