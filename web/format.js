// Numbers, sizes, durations and labels as people read them. Pure functions, no DOM.

const number = new Intl.NumberFormat("en");

/** 1234567 → "1,234,567". */
export function formatNumber(n) {
  return number.format(n);
}

/** Bytes in SI units: 950 → "950 B", 1234567 → "1.2 MB". */
export function formatBytes(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1000;
    unit += 1;
  } while (value >= 1000 && unit < units.length - 1);
  return `${value >= 100 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** Seconds as a short duration: 0.42 → "0.4 s", 75 → "1 min 15 s", 4000 → "1 h 07 min". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 0.05) return "under 0.1 s";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes} min ${String(whole % 60).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/** The time left of a running job: "about 12 s left", or "" when unknown. */
export function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return "almost done";
  return `about ${formatDuration(seconds < 10 ? Math.ceil(seconds) : seconds)} left`;
}

/** Pages per second: 3.14 → "3.1 pages/s", 120.4 → "120 pages/s". */
export function formatRate(pagesPerSecond) {
  if (pagesPerSecond === null || pagesPerSecond === undefined || !Number.isFinite(pagesPerSecond)) return "";
  const shown = pagesPerSecond < 10 ? pagesPerSecond.toFixed(1) : formatNumber(Math.round(pagesPerSecond));
  return `${shown} pages/s`;
}

/** Milliseconds: 0.42 → "0.4 ms", 12.3 → "12 ms", 1234 → "1.2 s". */
export function formatMs(ms) {
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Done as a whole percentage of total, never rounded up to 100 before the end; null while unknown. */
export function percentOf(done, total) {
  if (total === null || total === undefined) return null;
  if (total === 0) return 100;
  return Math.min(100, Math.floor((done / total) * 100));
}

/** "1 page", "2 pages". */
export function plural(n, word, many = `${word}s`) {
  return `${formatNumber(n)} ${n === 1 ? word : many}`;
}

/** The place in the queue, 1 = next. */
export function formatPosition(position) {
  return position === 1 ? "next in queue" : `#${formatNumber(position)} in queue`;
}

const KINDS = { pdf: "PDF", epub: "EPUB", text: "TXT", markdown: "MD", html: "HTML" };

/** The short badge for a document kind. */
export function kindLabel(kind) {
  return KINDS[kind] ?? String(kind).toUpperCase();
}

const STATES = {
  queued: "Queued",
  running: "Running",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

/** The label of a job state. */
export function stateLabel(state) {
  return STATES[state] ?? state;
}

/** Every job state, in the order of a job's life. */
export const JOB_STATES = Object.keys(STATES);

/** True for the states a job never leaves by itself. */
export function isFinished(state) {
  return state === "completed" || state === "failed" || state === "cancelled";
}
