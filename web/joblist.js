// The job list: one keyed row per job, newest first. Store changes only mark rows dirty; one
// requestAnimationFrame callback then updates just those rows (each write skipped when the
// value did not change), so a thousand jobs cost what the few that changed cost. The state
// filter is a CSS rule on the list (data-filter), so filtering touches no row at all.

import { el, progressBar, setAttr, setText, show, updateProgress } from "./dom.js";
import { JOB_STATES, formatNumber, isFinished, kindLabel, percentOf, stateLabel } from "./format.js";
import { allowedActions, detailText, metaText, positionText, progressText } from "./jobinfo.js";
import { announce } from "./notify.js";

// Each action button's visible text is short; its accessible name says which file.
const LABELS = { cancel: "Cancel", retry: "Retry", delete: "Delete" };

class Row {
  constructor(job) {
    this.id = job.id;
    this.seq = job.seq;
    this.state = null;
    this.last = {}; // the values last written, so unchanged ones cost no DOM access at all
    // A job's name and kind never change: written once.
    const name = job.filename;
    this.kind = el("span", { class: "kind", "aria-hidden": "true", dataset: { kind: job.kind } }, kindLabel(job.kind));
    this.name = el("a", { class: "job-name", href: `#/jobs/${job.id}` }, name);
    this.meta = el("span", { class: "job-meta" });
    this.chip = el("span", { class: "chip" });
    this.position = el("span", { class: "position", hidden: true });
    this.progress = progressBar(`Progress of ${name}`);
    this.progressLabel = el("span", { class: "progress-label" });
    this.detail = el("span", { class: "job-detail" });
    this.errorCode = el("code", { class: "error-code" });
    this.errorMessage = el("span", { class: "error-message" });
    this.error = el("p", { class: "job-error", hidden: true }, this.errorCode, " ", this.errorMessage);
    this.progressRow = el(
      "div",
      { class: "job-progress" },
      this.progress.bar,
      el("span", { class: "job-numbers" }, this.progressLabel, this.detail),
    );
    this.buttons = {};
    for (const [action, label] of Object.entries(LABELS)) {
      this.buttons[action] = el(
        "button",
        { class: "btn btn-small", type: "button", hidden: true, dataset: { action }, "aria-label": `${label} ${name}` },
        label,
      );
    }
    this.actionsBox = el("div", { class: "job-actions" }, ...Object.values(this.buttons));
    this.el = el(
      "li",
      { class: "job", dataset: { id: job.id } },
      this.kind,
      el("div", { class: "job-title" }, this.name, this.meta),
      el("div", { class: "job-status" }, this.chip, this.position),
      this.actionsBox,
      this.progressRow,
      this.error,
    );
  }

  text(key, node, value) {
    if (this.last[key] === value) return;
    this.last[key] = value;
    node.textContent = value;
  }

  visible(key, node, value) {
    if (this.last[key] === value) return;
    this.last[key] = value;
    node.hidden = !value;
  }

  /** Bring the row up to date with `job`, writing only what changed since the last time. */
  render(job) {
    if (this.last.state !== job.state) {
      this.last.state = job.state;
      this.el.dataset.state = job.state;
      this.chip.textContent = stateLabel(job.state);
    }
    this.text("meta", this.meta, metaText(job));
    const position = positionText(job);
    if (this.last.position !== position) {
      this.text("position", this.position, position);
      setAttr(this.position, "data-position", job.state === "queued" ? job.position : null);
      this.visible("positionShown", this.position, position !== "");
    }
    const progress = `${job.pages_done}/${job.pages_total}`;
    if (this.last.progress !== progress) {
      this.last.progress = progress;
      updateProgress(this.progress, job.pages_done, job.pages_total, percentOf(job.pages_done, job.pages_total));
    }
    this.text("label", this.progressLabel, progressText(job));
    this.text("detail", this.detail, detailText(job));
    const failed = job.state === "failed" && job.error !== null;
    this.visible("failed", this.error, failed);
    if (failed) {
      this.text("errorCode", this.errorCode, job.error.code);
      this.text("errorMessage", this.errorMessage, job.error.message);
    }
    // A job that ended before its document was opened has no progress to show, only its error.
    const hasProgress = !(job.pages_total === null && isFinished(job.state));
    if (this.last.progressRow !== hasProgress) {
      this.visible("progressRow", this.progressRow, hasProgress);
      this.el.toggleAttribute("data-no-progress", !hasProgress);
    }
    const allowed = allowedActions(job);
    this.visible("actions", this.actionsBox, allowed.cancel || allowed.retry || allowed.delete);
    this.visible("cancel", this.buttons.cancel, allowed.cancel);
    this.visible("retry", this.buttons.retry, allowed.retry);
    this.visible("delete", this.buttons.delete, allowed.delete);
  }
}

export class JobList {
  constructor({ list, filters, empty, summary }, store, actions) {
    this.list = list;
    this.filters = filters;
    this.empty = empty;
    this.summary = summary;
    this.store = store;
    this.actions = actions;
    this.rows = new Map();
    this.order = []; // rows by seq, newest first, as in the DOM
    this.dirty = new Set();
    this.gone = new Set();
    this.reset = false;
    this.frame = 0;
    this.filter = "all";
    this.selected = null;
    this.filterButtons = new Map();
    this.buildFilters();
    this.updateCounts();
    store.subscribe((change) => {
      for (const id of change.changed) this.dirty.add(id);
      for (const id of change.removed) this.gone.add(id);
      this.reset ||= change.reset;
      this.schedule();
    });
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      this.actions.run(button.dataset.action, button.closest(".job").dataset.id, button);
    });
  }

  buildFilters() {
    for (const state of ["all", ...JOB_STATES]) {
      const count = el("span", { class: "count" }, "0");
      const button = el(
        "button",
        {
          class: "filter",
          type: "button",
          "aria-pressed": state === this.filter ? "true" : "false",
          dataset: { state },
        },
        state === "all" ? "All" : stateLabel(state),
        count,
      );
      button.addEventListener("click", () => this.setFilter(state));
      this.filterButtons.set(state, { button, count });
      this.filters.append(button);
    }
  }

  setFilter(state) {
    this.filter = state;
    this.list.dataset.filter = state;
    for (const [name, { button }] of this.filterButtons) setAttr(button, "aria-pressed", String(name === state));
    this.updateCounts();
  }

  /** Mark the open job's row. */
  select(id) {
    const previous = this.selected && this.rows.get(this.selected);
    if (previous) {
      previous.el.classList.remove("selected");
      setAttr(previous.name, "aria-current", null);
    }
    this.selected = id;
    const row = id && this.rows.get(id);
    if (row) {
      row.el.classList.add("selected");
      setAttr(row.name, "aria-current", "true");
    }
  }

  /** The row's link, to give focus back to when the job view closes. */
  linkOf(id) {
    const row = this.rows.get(id);
    return row ? row.name : null;
  }

  schedule() {
    if (this.frame === 0) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const announcements = [];
    for (const id of this.gone) {
      const row = this.rows.get(id);
      if (!row) continue;
      row.el.remove();
      this.rows.delete(id);
      this.order.splice(this.order.indexOf(row), 1);
    }
    this.gone.clear();
    const reset = this.reset;
    this.reset = false;
    for (const id of this.dirty) {
      const job = this.store.get(id);
      if (!job) continue;
      let row = this.rows.get(id);
      if (row === undefined) {
        row = new Row(job);
        this.rows.set(id, row);
        if (id === this.selected) this.select(id);
        if (!reset) this.insert(row);
      } else if (row.seq !== job.seq) {
        // A retried job goes to the end of the queue with a new sequence number: move its row.
        row.seq = job.seq;
        if (!reset) {
          this.order.splice(this.order.indexOf(row), 1);
          this.insert(row);
        }
      }
      if (!reset && row.state !== null && !isFinished(row.state) && isFinished(job.state)) {
        announcements.push(`${job.filename} ${job.state}`);
      }
      row.state = job.state;
      row.render(job);
    }
    this.dirty.clear();
    if (reset) this.reorder();
    if (announcements.length > 0 && announcements.length <= 3) announce(announcements.join(". "));
    this.updateCounts();
  }

  /** Put a row at its place by seq (newest first): a binary search, then one DOM insert. */
  insert(row) {
    let low = 0;
    let high = this.order.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (this.order[mid].seq > row.seq) low = mid + 1;
      else high = mid;
    }
    this.order.splice(low, 0, row);
    const next = this.order[low + 1];
    this.list.insertBefore(row.el, next ? next.el : null);
  }

  /** After a sync: drop rows of jobs that are gone, and put the rest in order (moving nodes only if needed). */
  reorder() {
    for (const [id, row] of this.rows) {
      if (!this.store.get(id)) {
        row.el.remove();
        this.rows.delete(id);
      }
    }
    this.order = [...this.rows.values()].sort((a, b) => b.seq - a.seq);
    const children = this.list.children;
    const inOrder = children.length === this.order.length && this.order.every((row, i) => children[i] === row.el);
    if (!inOrder) this.list.append(...this.order.map((row) => row.el));
  }

  updateCounts() {
    const counts = { all: 0, queued: 0, running: 0, completed: 0, failed: 0, cancelled: 0 };
    for (const job of this.store.jobs.values()) {
      counts.all += 1;
      counts[job.state] += 1;
    }
    for (const [state, { count }] of this.filterButtons) setText(count, formatNumber(counts[state]));
    const shown = counts[this.filter];
    show(this.empty, shown === 0);
    let message = `No ${this.filter} jobs.`;
    if (!this.store.synced) message = "Waiting for the server to send the jobs…";
    else if (counts.all === 0) message = "No jobs yet. Drop a document anywhere on this page to start.";
    setText(this.empty, message);
    // Nothing yet at all: the drop zone is the whole story (style.css, .board.first-run).
    this.list.parentElement.classList.toggle("first-run", this.store.synced && counts.all === 0);
    const parts = [];
    if (counts.running) parts.push(`${formatNumber(counts.running)} running`);
    if (counts.queued) parts.push(`${formatNumber(counts.queued)} queued`);
    const done = counts.completed + counts.failed + counts.cancelled;
    if (done) parts.push(`${formatNumber(done)} finished`);
    setText(this.summary, parts.join(" · "));
  }
}
