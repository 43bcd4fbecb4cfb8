// The jobs the UI knows, by id, as the global stream and the API answers describe them
// (shared_schemas/job.json). Listeners get the ids that changed, never the whole list.

/**
 * Is `incoming` at least as new as `current`? A job's event log only grows, so its
 * last_event_id never goes back: an older copy (an action's answer overtaken by a frame, or
 * a frame built before it) never replaces a newer one. Equal ids still replace: the queue
 * position and the rates change without an event.
 */
function newer(incoming, current) {
  return current === undefined || incoming.last_event_id >= current.last_event_id;
}

export class JobStore {
  constructor() {
    this.jobs = new Map();
    this.listeners = new Set();
    this.synced = false;
  }

  /** listener({ changed: Set<id>, removed: Set<id>, reset: boolean }); returns the unsubscribe. */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(change) {
    for (const listener of this.listeners) listener(change);
  }

  get(id) {
    return this.jobs.get(id);
  }

  /** A `sync` frame: every job there is now. Jobs we had that it does not list are gone. */
  replaceAll(jobs) {
    const removed = new Set(this.jobs.keys());
    const next = new Map();
    for (const job of jobs) {
      next.set(job.id, job);
      removed.delete(job.id);
    }
    this.jobs = next;
    this.synced = true;
    this.emit({ changed: new Set(next.keys()), removed, reset: true });
  }

  /** Forget every job (signed out: the next person must not see them). */
  clear() {
    const removed = new Set(this.jobs.keys());
    this.jobs = new Map();
    this.synced = false;
    this.emit({ changed: new Set(), removed, reset: true });
  }

  /** A `jobs` frame: changed jobs, removed ids, and the whole queue's positions when it moved. */
  apply(jobs, removed, positions) {
    const changed = new Set();
    for (const job of jobs) {
      if (newer(job, this.jobs.get(job.id))) {
        this.jobs.set(job.id, job);
        changed.add(job.id);
      }
    }
    const gone = new Set();
    for (const id of removed) {
      if (this.jobs.delete(id)) gone.add(id);
    }
    if (positions) {
      for (const [id, position] of Object.entries(positions)) {
        const job = this.jobs.get(id);
        if (job && job.state === "queued" && job.position !== position) {
          this.jobs.set(id, { ...job, position });
          changed.add(id);
        }
      }
    }
    if (changed.size || gone.size) this.emit({ changed, removed: gone, reset: false });
  }

  /** One job from an API answer (upload, cancel, retry): shown at once, before the next frame. */
  upsert(job) {
    if (!newer(job, this.jobs.get(job.id))) return;
    this.jobs.set(job.id, job);
    this.emit({ changed: new Set([job.id]), removed: new Set(), reset: false });
  }

  remove(id) {
    if (this.jobs.delete(id)) this.emit({ changed: new Set(), removed: new Set([id]), reset: false });
  }
}
