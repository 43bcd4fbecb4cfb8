// Every event type of the contract and what the UI does with it — the one place to look.
//
// GLOBAL_EVENT_HANDLERS has one key per `type` of shared_schemas/events/global-index.json and
// JOB_EVENT_HANDLERS one per `type` of shared_schemas/events/index.json; streams.js registers
// a listener for each key. tests/test_web.py::test_ui_handles_every_event_type reads both
// schemas and checks these keys, so a new event type cannot be forgotten.
// Convention for that test: one handler per line-leading `name(target, event) {` key.

/** The global stream (GET /api/v1/events): state synchronisation of the job list. */
export const GLOBAL_EVENT_HANDLERS = {
  // Every job the caller may see, first on every connection: replaces what we had.
  sync(store, event) {
    store.replaceAll(event.jobs);
  },
  // The jobs that changed (as they are now), the ids removed, and queue positions when the queue moved.
  jobs(store, event) {
    store.apply(event.jobs, event.removed, event.positions);
  },
};

/** One job's stream (GET /api/v1/jobs/{id}/events?text=1): lossless, in order. */
export const JOB_EVENT_HANDLERS = {
  // The job as it is now; first on every connection, no id.
  snapshot(view, event) {
    view.setJob(event.job);
  },
  queued(view, event) {
    view.update({ state: "queued", position: event.position, error: null, cancel_requested: false });
  },
  // Id-less: the job moved up in the queue.
  position(view, event) {
    view.update({ position: event.position });
  },
  started(view, event) {
    view.update({
      state: "running",
      position: null,
      attempts: event.attempt,
      pages_total: event.pages_total,
      pages_done: event.pages_done,
    });
    if (event.attempt > 1 || event.resume_from > 1) {
      view.note("info", `Run ${event.attempt} started at page ${event.resume_from}.`);
    }
  },
  page(view, event) {
    view.addPage(event.page);
    view.update({ pages_done: event.pages_done, pages_total: event.pages_total });
  },
  retrying(view, event) {
    view.update({ pages_done: event.pages_done });
    const n = event.pages_done;
    const kept = n === 0 ? "No page was done yet" : n === 1 ? "The page done is kept" : `The ${n} pages done are kept`;
    view.note(
      "warning",
      `Run ${event.attempt} was interrupted: ${event.reason.message}. ${kept}; the next run goes on from there.`,
      event.reason.code,
    );
  },
  completed(view, event) {
    view.update({
      state: "completed",
      pages_done: event.pages_done,
      pages_total: event.pages_total,
      duration_seconds: event.duration_seconds,
      pages_per_second: null,
      eta_seconds: null,
      cancel_requested: false,
    });
    view.ended();
  },
  failed(view, event) {
    view.update({
      state: "failed",
      error: event.error,
      pages_done: event.pages_done,
      pages_per_second: null,
      eta_seconds: null,
    });
    view.ended();
  },
  cancelled(view, event) {
    view.update({
      state: "cancelled",
      pages_done: event.pages_done,
      pages_per_second: null,
      eta_seconds: null,
      cancel_requested: false,
    });
    view.ended();
  },
};
