// Getting files in: dropped anywhere on the page or picked. Each file is its own job (one
// POST each, one after the other, so the queue keeps the order the files were given in).
// A file the server refuses stays in the list with the server's own message.

import { uploadFile } from "./api.js";
import { el, setText } from "./dom.js";
import { formatBytes } from "./format.js";
import { announce } from "./notify.js";

const ACCEPTED_SHOWN_MS = 2500;

export class Uploads {
  constructor({ input, pick, list, overlay }, store) {
    this.input = input;
    this.list = list;
    this.overlay = overlay;
    this.store = store;
    this.queue = [];
    this.busy = false;
    this.dragDepth = 0;
    pick.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      this.add([...input.files]);
      input.value = ""; // picking the same file again is a new job
    });
    document.addEventListener("dragenter", (event) => this.dragEnter(event));
    document.addEventListener("dragover", (event) => this.dragOver(event));
    document.addEventListener("dragleave", (event) => this.dragLeave(event));
    document.addEventListener("drop", (event) => this.drop(event));
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-dismiss]");
      if (button) button.closest(".upload").remove();
    });
  }

  static hasFiles(event) {
    return event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  }

  dragEnter(event) {
    if (!Uploads.hasFiles(event)) return;
    event.preventDefault();
    this.dragDepth += 1;
    this.overlay.hidden = false;
  }

  dragOver(event) {
    if (!Uploads.hasFiles(event)) return;
    event.preventDefault(); // without this the page would not accept the drop
    event.dataTransfer.dropEffect = "copy";
  }

  dragLeave(event) {
    if (!Uploads.hasFiles(event)) return;
    this.dragDepth = Math.max(0, this.dragDepth - 1);
    if (this.dragDepth === 0) this.overlay.hidden = true;
  }

  drop(event) {
    if (!Uploads.hasFiles(event)) return;
    event.preventDefault(); // never let the browser open the file instead
    this.dragDepth = 0;
    this.overlay.hidden = true;
    this.add([...event.dataTransfer.files]);
  }

  /** Queue files for upload, each shown at once with its state. */
  add(files) {
    for (const file of files) {
      const status = el("span", { class: "upload-status" }, "waiting");
      const fill = el("div", { class: "upload-fill" });
      const item = el(
        "li",
        { class: "upload", dataset: { state: "waiting" } },
        el("span", { class: "upload-name" }, file.name),
        el("span", { class: "upload-size" }, formatBytes(file.size)),
        status,
        el("div", { class: "upload-bar", "aria-hidden": "true" }, fill),
      );
      this.list.append(item);
      this.queue.push({ file, item, status, fill });
    }
    if (files.length) announce(`${files.length === 1 ? files[0].name : `${files.length} files`} uploading`);
    this.pump();
  }

  async pump() {
    if (this.busy) return;
    this.busy = true;
    while (this.queue.length) await this.send(this.queue.shift());
    this.busy = false;
  }

  async send({ file, item, status, fill }) {
    item.dataset.state = "uploading";
    setText(status, "uploading…");
    try {
      const answer = await uploadFile(file, (fraction) => {
        fill.style.width = `${(fraction * 100).toFixed(1)}%`;
      });
      // One file gives one job; a batch answer ({"jobs": […]}) would carry several.
      for (const created of answer.jobs ?? [answer]) this.store.upsert(created);
      item.dataset.state = "accepted";
      setText(status, "added to the queue");
      setTimeout(() => item.remove(), ACCEPTED_SHOWN_MS);
    } catch (error) {
      item.dataset.state = "refused";
      item.setAttribute("role", "alert");
      status.replaceChildren(
        el("span", { class: "upload-refused" }, "Refused"),
        " ",
        el("span", { class: "upload-message", dataset: { code: error.code } }, error.message),
      );
      if (error.retryAfter)
        status.append(el("span", { class: "upload-hint" }, ` (try again in ${error.retryAfter} s)`));
      item.append(
        el(
          "button",
          { class: "icon-btn", type: "button", dataset: { dismiss: "1" }, "aria-label": `Dismiss ${file.name}` },
          "×",
        ),
      );
    }
  }
}
