// Short messages: toasts people can see (and dismiss), and a polite live region for screen readers.

import { el } from "./dom.js";

const TOAST_MS = 6000;

/** A toast at the bottom of the page, e.g. when an action was refused by the server. */
export function toast(text, kind = "error") {
  const region = document.getElementById("toasts");
  const close = el("button", { class: "icon-btn", type: "button", "aria-label": "Dismiss" }, "×");
  const item = el(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    el("span", { class: "toast-text", text }),
    close,
  );
  const remove = () => item.remove();
  close.addEventListener("click", remove);
  setTimeout(remove, TOAST_MS);
  region.append(item);
}

let clearTimer = 0;

/** Say something to screen-reader users without moving focus. */
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = text;
  clearTimeout(clearTimer);
  clearTimer = setTimeout(() => {
    region.textContent = "";
  }, 4000);
}
