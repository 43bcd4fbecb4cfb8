// What a job (shared_schemas/job.json) says, in words: shared by the list and the job view.

import {
  formatBytes,
  formatDuration,
  formatEta,
  formatNumber,
  formatPosition,
  formatRate,
  kindLabel,
  percentOf,
  plural,
} from "./format.js";

/** "PDF · 1.2 MB · 429 pages · pages 1-10" */
export function metaText(job) {
  const parts = [kindLabel(job.kind), formatBytes(job.size)];
  if (job.pages_total !== null) parts.push(plural(job.pages_total, "page"));
  if (job.options && job.options.pages) parts.push(`selection ${job.options.pages}`);
  if (job.attempts > 1) parts.push(`run ${job.attempts}`);
  return parts.join(" · ");
}

/** "120 / 429 pages · 28 %" — or the place in the queue while queued. */
export function progressText(job) {
  const percent = percentOf(job.pages_done, job.pages_total);
  const pages =
    job.pages_total === null
      ? job.pages_done > 0
        ? `${plural(job.pages_done, "page")} done`
        : ""
      : `${formatNumber(job.pages_done)} / ${plural(job.pages_total, "page")} · ${percent} %`;
  if (job.state === "queued") return job.pages_done > 0 ? pages : "";
  if (job.state === "running" && job.pages_total === null) return "opening the document…";
  return pages;
}

/** The line that says how it goes: rate and time left, or how it ended. */
export function detailText(job) {
  switch (job.state) {
    case "running": {
      if (job.cancel_requested) return "cancelling…";
      const parts = [formatRate(job.pages_per_second), formatEta(job.eta_seconds)].filter(Boolean);
      return parts.length ? parts.join(" · ") : "starting…";
    }
    case "completed":
      return job.duration_seconds === null ? "done" : `done in ${formatDuration(job.duration_seconds)}`;
    case "failed":
      return job.pages_done > 0 ? `stopped after ${plural(job.pages_done, "page")}` : "";
    case "cancelled":
      return job.pages_total
        ? `cancelled after ${formatNumber(job.pages_done)} of ${plural(job.pages_total, "page")}`
        : "cancelled";
    default:
      return "";
  }
}

/** The place in the queue while queued, else "". */
export function positionText(job) {
  return job.state === "queued" && job.position !== null ? formatPosition(job.position) : "";
}

/** Which actions a job allows now. */
export function allowedActions(job) {
  return {
    cancel: (job.state === "queued" || job.state === "running") && !job.cancel_requested,
    retry: job.state === "failed" || job.state === "cancelled",
    delete: job.state === "completed" || job.state === "failed" || job.state === "cancelled",
  };
}
