// EventSource handling: one stream object per connection the UI keeps (the global stream, and
// the open job's stream). What the browser does by itself and what we add:
// - a dropped connection or a server restart: the browser reconnects after the server's
//   `retry:` hint and sends Last-Event-ID itself (readyState CONNECTING → "reconnecting");
// - an answer that is not a 200 event stream (204 "nothing more", 503 "too many streams")
//   closes the EventSource for good (readyState CLOSED). Then `onClosed` decides: the default
//   is our own reconnect with exponential backoff and jitter, resuming after the last id seen
//   (a new EventSource sends no Last-Event-ID, so the id goes in `?after=`).

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;

/**
 * An EventSource with one listener per named event. `handlers` maps each event type to
 * `(target, data, event) => void`; every key is registered with addEventListener (named
 * events never reach onmessage).
 */
export class EventStream {
  constructor({ url, handlers, target, onStatus = () => {}, onClosed = null }) {
    this.url = url; // (lastId) => string
    this.handlers = handlers;
    this.target = target;
    this.onStatus = onStatus;
    this.onClosed = onClosed;
    this.source = null;
    this.lastId = 0;
    this.failures = 0;
    this.timer = null;
    this.retryAt = null;
    this.status = "connecting";
    this.everOpen = false;
  }

  open() {
    this.stop();
    const source = new EventSource(this.url(this.lastId));
    this.source = source;
    for (const type of Object.keys(this.handlers)) {
      source.addEventListener(type, (event) => this.dispatch(type, event));
    }
    source.addEventListener("open", () => {
      if (this.source !== source) return;
      this.failures = 0;
      this.everOpen = true;
      this.setStatus("live");
    });
    source.addEventListener("error", () => {
      if (this.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.source = null;
        if (this.onClosed) this.onClosed(this);
        else this.reconnectLater();
      } else {
        // CONNECTING: the browser is already coming back by itself.
        this.setStatus(this.everOpen ? "reconnecting" : "connecting");
      }
    });
    this.setStatus(this.everOpen ? "reconnecting" : "connecting");
  }

  dispatch(type, event) {
    if (this.source === null) return; // closed in an earlier handler of the same chunk
    // Only log events carry an id; snapshot and position do not (and keep the previous one).
    if (event.lastEventId !== "") this.lastId = Math.max(this.lastId, Number(event.lastEventId));
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (error) {
      console.error(`pagestream: a ${type} event that is not JSON`, error);
      return;
    }
    this.handlers[type](this.target, data, event);
  }

  /** Our own reconnect, for a stream the browser gave up on (503, or any other refusal). */
  reconnectLater() {
    this.stop();
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.failures);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.failures += 1;
    this.retryAt = Date.now() + delay;
    this.setStatus("offline");
    this.timer = setTimeout(() => {
      this.timer = null;
      this.retryAt = null;
      this.open();
    }, delay);
  }

  /** Close the connection and any pending reconnect. */
  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = null;
    if (this.source !== null) {
      this.source.close();
      this.source = null;
    }
  }

  close() {
    this.stop();
    this.setStatus("closed");
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.onStatus(status, this);
  }
}
