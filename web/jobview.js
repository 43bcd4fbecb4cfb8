// The open job: its pages one by one with their text, a chart of milliseconds per page, the
// downloads, and the job's own event stream (the second and last EventSource of the tab).
//
// The stream replays the job's whole log on opening (after=0) and then follows it; after a
// dropped connection the browser resumes with Last-Event-ID. Pages are kept by number, so a
// page that arrives twice (a replay overlapping what we had) is shown once.

import { getJob, jobEventsUrl, resultUrl } from "./api.js";
import { MsChart } from "./chart.js";
import { el, progressBar, setAttr, setText, show, updateProgress } from "./dom.js";
import { JOB_EVENT_HANDLERS } from "./events.js";
import { formatMs, formatNumber, isFinished, kindLabel, percentOf, plural, stateLabel } from "./format.js";
import { allowedActions, detailText, metaText, positionText, progressText } from "./jobinfo.js";
import { EventStream } from "./streams.js";

const COPIED_MS = 1600;

/** Copy text to the clipboard: the async Clipboard API, or a selected textarea where it is missing or refused. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // refused (no permission, document not focused): try the old way
    }
  }
  const area = el("textarea", { class: "clipboard-helper", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

function stem(filename) {
  const dot = filename.lastIndexOf(".");
  return dot > 0 ? filename.slice(0, dot) : filename;
}

export class JobView {
  constructor(root, store, actions, { onClose }) {
    this.root = root;
    this.store = store;
    this.actions = actions;
    this.onClose = onClose;
    this.id = null;
    this.stream = null;
    this.unsubscribe = null;
    this.frame = 0;
    root.addEventListener("click", (event) => this.onClick(event));
  }

  /** Show job `id`; its stream starts from the beginning of its log. */
  open(id) {
    if (this.id === id) return;
    this.close();
    this.id = id;
    this.job = this.store.get(id) ?? null;
    this.pages = new Map(); // number → { page, node }
    this.pending = [];
    this.lastNumber = 0;
    this.gone = false;
    this.streamEnded = false;
    this.chart = new MsChart();
    this.build();
    this.root.hidden = false;
    this.root.scrollTop = 0;
    this.unsubscribe = this.store.subscribe((change) => this.onStore(change));
    this.stream = new EventStream({
      url: (after) => jobEventsUrl(id, after),
      handlers: JOB_EVENT_HANDLERS,
      target: this,
      onClosed: () => this.streamClosed(),
    });
    this.render();
    if (this.job) this.stream.open();
    else this.connectIfThere(id);
  }

  /** A job the list does not know (yet): ask for it first, so a wrong id shows as such. */
  async connectIfThere(id) {
    try {
      this.job = await getJob(id);
    } catch (error) {
      if (this.id !== id) return;
      if (error.status === 404) this.markGone();
      else this.stream.open(); // unreachable now: the stream's own retries take over
      return;
    }
    if (this.id !== id) return;
    this.stream.open();
    this.schedule();
  }

  close() {
    if (this.id === null) return;
    if (this.stream) this.stream.close();
    if (this.unsubscribe) this.unsubscribe();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.stream = null;
    this.unsubscribe = null;
    this.id = null;
    this.root.hidden = true;
    this.root.replaceChildren();
  }

  focus() {
    this.title.focus({ preventScroll: true });
  }

  build() {
    const closeButton = el(
      "button",
      { class: "icon-btn view-close", type: "button", "aria-label": "Close the job" },
      "×",
    );
    closeButton.addEventListener("click", () => this.onClose());
    this.kind = el("span", { class: "kind", "aria-hidden": "true" });
    this.title = el("h2", { class: "view-title", id: "view-title", tabindex: "-1" });
    this.meta = el("p", { class: "view-meta" });
    this.chip = el("span", { class: "chip" });
    this.position = el("span", { class: "position" });
    this.progress = progressBar("Progress");
    this.progressLabel = el("span", { class: "progress-label" });
    this.detail = el("span", { class: "job-detail" });
    this.errorCode = el("code", { class: "error-code" });
    this.errorMessage = el("span", { class: "error-message" });
    this.error = el("p", { class: "job-error", hidden: true }, this.errorCode, " ", this.errorMessage);
    this.notices = el("ul", { class: "notices", "aria-label": "What happened to this job" });
    this.buttons = {
      cancel: el("button", { class: "btn btn-small", type: "button", dataset: { action: "cancel" } }, "Cancel"),
      retry: el("button", { class: "btn btn-small", type: "button", dataset: { action: "retry" } }, "Retry"),
      delete: el("button", { class: "btn btn-small", type: "button", dataset: { action: "delete" } }, "Delete"),
    };
    this.downloads = {};
    for (const [format, label] of [
      ["text", "Text"],
      ["json", "JSON"],
      ["ndjson", "NDJSON"],
    ]) {
      this.downloads[format] = el("a", { class: "btn btn-small download", dataset: { format } }, label);
    }
    this.downloadNote = el("span", { class: "download-note" });
    this.pageList = el("ol", { class: "pages", "aria-label": "Pages" });
    this.pagesEmpty = el("p", { class: "pages-empty" });
    this.pagesHeading = el("h3", { class: "pages-heading" }, "Pages");
    this.root.replaceChildren(
      // The name and the progress stay in sight while the pages scroll under them.
      el(
        "div",
        { class: "view-top" },
        el(
          "header",
          { class: "view-head" },
          el("div", { class: "view-name" }, this.kind, el("div", { class: "view-heading" }, this.title, this.meta)),
          closeButton,
        ),
        el("div", { class: "view-status" }, this.chip, this.position, this.detail),
        el(
          "div",
          { class: "job-progress" },
          this.progress.bar,
          el("span", { class: "job-numbers" }, this.progressLabel),
        ),
      ),
      this.error,
      el(
        "div",
        { class: "view-toolbar" },
        el("div", { class: "view-actions" }, this.buttons.cancel, this.buttons.retry, this.buttons.delete),
        el(
          "div",
          { class: "view-downloads", role: "group", "aria-label": "Download the text" },
          el("span", { class: "download-label" }, "Download"),
          this.downloads.text,
          this.downloads.json,
          this.downloads.ndjson,
          this.downloadNote,
        ),
      ),
      this.notices,
      this.chart.root,
      this.pagesHeading,
      this.pagesEmpty,
      this.pageList,
    );
  }

  // -- what the event handlers (events.js) call

  /** The snapshot: the job as it is now. */
  setJob(job) {
    const done = this.job ? Math.max(this.job.pages_done, job.pages_done) : job.pages_done;
    this.job = { ...job, pages_done: done };
    this.schedule();
  }

  /** A change told by an event; pages_done never goes back (a replay may be behind the snapshot). */
  update(patch) {
    if (!this.job) return;
    const next = { ...this.job, ...patch };
    if (patch.pages_done !== undefined) next.pages_done = Math.max(this.job.pages_done, patch.pages_done);
    if (next.state !== "queued") next.position = null;
    this.job = next;
    this.schedule();
  }

  addPage(page) {
    if (this.pages.has(page.number)) return; // already shown: never twice
    this.pages.set(page.number, { page, node: null });
    this.pending.push(page);
    this.chart.add(page.number, page.ms);
    this.schedule();
  }

  note(kind, text, code = null) {
    this.notices.append(el("li", { class: `notice notice-${kind}`, title: code }, text));
  }

  /** The terminal event: the server ends the stream, so do we (no reconnect, no 204 round trip). */
  ended() {
    this.streamEnded = true;
    if (this.stream) this.stream.stop();
  }

  // -- the stream and the store

  /** The browser gave up on the stream (204, 503, …) before a terminal event: find out why. */
  async streamClosed() {
    const id = this.id;
    let job;
    try {
      job = await getJob(id);
    } catch (error) {
      if (this.id !== id) return;
      if (error.status === 404) this.markGone();
      else if (error.status !== 401) this.stream.reconnectLater(); // 401: the view opens again after the sign-in
      return;
    }
    if (this.id !== id) return;
    if (isFinished(job.state) && job.last_event_id <= this.stream.lastId) {
      this.streamEnded = true; // we have every event: that was the server's 204
      return;
    }
    this.stream.reconnectLater(); // most likely 503, too many streams: back off and resume
  }

  onStore(change) {
    if (change.removed.has(this.id) && !this.store.get(this.id)) {
      // A sync leaves out finished jobs past the most recent thousand: gone from it is not
      // deleted. A removal the server announced, or our own delete, is.
      if (change.reset) this.checkStillThere();
      else this.markGone();
      return;
    }
    if (!change.changed.has(this.id)) return;
    const fresh = this.store.get(this.id);
    if (!this.job) {
      this.job = fresh;
      this.schedule();
      return;
    }
    // Rates, ETA and a pending cancel are not in the job's events: take them from the store.
    if (fresh.state === this.job.state) {
      this.job = {
        ...this.job,
        pages_per_second: fresh.pages_per_second,
        eta_seconds: fresh.eta_seconds,
        cancel_requested: fresh.cancel_requested,
        attempts: Math.max(this.job.attempts, fresh.attempts),
      };
      this.schedule();
    }
    // A retried job has new events after the end we saw: follow it again.
    if (this.streamEnded && !isFinished(fresh.state) && fresh.last_event_id > this.stream.lastId) {
      this.streamEnded = false;
      this.stream.open();
    }
  }

  async checkStillThere() {
    const id = this.id;
    try {
      await getJob(id);
    } catch (error) {
      if (this.id === id && error.status === 404) this.markGone();
    }
  }

  markGone() {
    this.gone = true;
    if (this.stream) this.stream.stop();
    this.schedule();
  }

  // -- drawing

  schedule() {
    if (this.frame === 0) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    if (this.id === null) return;
    const job = this.job;
    if (this.gone) {
      setText(this.title, job ? job.filename : "No such job");
      setText(this.meta, job ? "This job was deleted." : `There is no job ${this.id} here; it may have been deleted.`);
      this.root.dataset.state = "gone";
      for (const button of Object.values(this.buttons)) show(button, false);
      for (const link of Object.values(this.downloads)) show(link, false);
      return;
    }
    if (!job) {
      setText(this.title, "Loading…");
      return;
    }
    this.root.dataset.state = job.state;
    setText(this.title, job.filename);
    setText(this.kind, kindLabel(job.kind));
    setAttr(this.kind, "data-kind", job.kind);
    setText(this.meta, metaText(job));
    setText(this.chip, stateLabel(job.state));
    const position = positionText(job);
    setText(this.position, position);
    setAttr(this.position, "data-position", job.state === "queued" ? job.position : null);
    show(this.position, position !== "");
    setAttr(this.progress.bar, "aria-label", `Progress of ${job.filename}`);
    updateProgress(this.progress, job.pages_done, job.pages_total, percentOf(job.pages_done, job.pages_total));
    setText(this.progressLabel, progressText(job));
    setText(this.detail, detailText(job));
    const failed = job.state === "failed" && job.error !== null;
    show(this.error, failed);
    if (failed) {
      setText(this.errorCode, job.error.code);
      setText(this.errorMessage, job.error.message);
    }
    const allowed = allowedActions(job);
    for (const [action, button] of Object.entries(this.buttons)) show(button, allowed[action]);
    const finished = isFinished(job.state);
    for (const [format, link] of Object.entries(this.downloads)) {
      setAttr(link, "href", resultUrl(job.id, format, !finished));
      setAttr(link, "download", `${stem(job.filename)}.${format === "text" ? "txt" : format}`);
    }
    setText(this.downloadNote, finished ? "" : "(pages so far)");
    this.chart.setTotal(job.pages_total);
    this.renderPages(job);
    this.chart.render();
  }

  renderPages(job) {
    if (this.pending.length > 0) {
      this.pending.sort((a, b) => a.number - b.number);
      let run = document.createDocumentFragment();
      for (const page of this.pending) {
        const node = this.pageNode(page);
        this.pages.get(page.number).node = node;
        if (page.number > this.lastNumber) {
          run.append(node);
          this.lastNumber = page.number;
        } else {
          // Out of order (rare): before the first page with a larger number.
          this.pageList.append(run);
          run = document.createDocumentFragment();
          const next = [...this.pageList.children].find((li) => Number(li.dataset.number) > page.number);
          this.pageList.insertBefore(node, next ?? null);
        }
      }
      this.pageList.append(run);
      this.pending = [];
    }
    const count = this.pages.size;
    setText(
      this.pagesHeading,
      job.pages_total !== null ? `Pages · ${formatNumber(count)} of ${formatNumber(job.pages_total)}` : "Pages",
    );
    show(this.pagesEmpty, count === 0);
    if (count === 0) {
      const waiting = {
        queued: "Waiting in the queue. Pages appear here as they are extracted.",
        running: "Opening the document…",
        completed: "This document has no pages.",
        failed: "No page was extracted.",
        cancelled: "Cancelled before the first page.",
      };
      setText(this.pagesEmpty, waiting[job.state] ?? "");
    }
  }

  pageNode(page) {
    const text = page.text ?? "";
    const figures = `${plural(page.words, "word")} · ${plural(page.chars, "char")} · ${formatMs(page.ms)}`;
    return el(
      "li",
      { class: "page", dataset: { number: page.number }, id: `page-${page.number}` },
      el(
        "div",
        { class: "page-head" },
        el("span", { class: "page-no" }, `Page ${page.number}`),
        el("span", { class: "page-meta" }, figures),
        el(
          "button",
          {
            class: "btn btn-small copy",
            type: "button",
            dataset: { action: "copy" },
            "aria-label": `Copy the text of page ${page.number}`,
            disabled: text === "",
          },
          "Copy",
        ),
      ),
      page.error ? el("p", { class: "page-error" }, page.error) : null,
      text === ""
        ? el("p", { class: "page-text page-text-empty" }, "No text on this page.")
        : el("div", { class: "page-text" }, text),
    );
  }

  async onClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || this.id === null) return;
    const action = button.dataset.action;
    if (action !== "copy") {
      this.actions.run(action, this.id, button);
      return;
    }
    const number = Number(button.closest(".page").dataset.number);
    const entry = this.pages.get(number);
    const ok = await copyText(entry ? (entry.page.text ?? "") : "");
    button.textContent = ok ? "Copied" : "Copy failed";
    button.classList.toggle("copied", ok);
    setTimeout(() => {
      button.textContent = "Copy";
      button.classList.remove("copied");
    }, COPIED_MS);
  }
}
