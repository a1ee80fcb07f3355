// The dashboard's only script: keeps the marketer token for this tab (sessionStorage, never a
// cookie, so no other site can ride on it), and every 3 s swaps in the panels the origin
// renders for the chosen window.
"use strict";

const KEY = "edgefront.marketer_token";
const REFRESH_MS = 3000;
let timer = null;
let inFlight = false;

const $ = (id) => document.getElementById(id);

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = kind || "";
}

function signedIn(yes) {
  $("sign-out").hidden = !yes;
  $("token").hidden = yes;
  document.querySelector("#sign-in button[type=submit]").hidden = yes;
}

function stop() {
  if (timer) clearInterval(timer);
  timer = null;
}

async function refresh() {
  const token = sessionStorage.getItem(KEY);
  if (!token || inFlight) return;
  inFlight = true;
  try {
    const w = encodeURIComponent($("window").value);
    const resp = await fetch(`/v1/dashboard/panels?window=${w}`, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
    if (resp.status === 401 || resp.status === 403) {
      sessionStorage.removeItem(KEY);
      stop();
      $("panels").replaceChildren();
      signedIn(false);
      setStatus("Token refused", "error");
      return;
    }
    if (!resp.ok) {
      setStatus(`Refresh failed (${resp.status}); retrying`, "error");
      return;
    }
    // The fragment is the origin's own markup, escaped where it holds data.
    $("panels").innerHTML = await resp.text();
    setStatus(`Live · updated ${new Date().toLocaleTimeString()}`, "live");
  } catch (e) {
    setStatus("Origin unreachable; retrying", "error");
  } finally {
    inFlight = false;
  }
}

function start() {
  stop();
  signedIn(true);
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    sessionStorage.setItem(KEY, token);
    setStatus("Signing in…");
    start();
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    stop();
    $("panels").replaceChildren();
    signedIn(false);
    setStatus("Signed out");
  });
  $("window").addEventListener("change", refresh);
  if (sessionStorage.getItem(KEY)) start();
});
