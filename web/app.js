// The entry point: builds the parts and wires them together.
//   store.js     the jobs, by id (from the global stream and API answers)
//   streams.js   EventSource with our own backoff   events.js  a handler per event type
//   joblist.js   the list                           jobview.js the open job (+ chart.js)
//   uploads.js   drop and pick files                actions.js cancel / retry / delete
//   session.js   sign-in, when the server has keys  api.js     HTTP and the error shape
//   format.js, jobinfo.js, dom.js, notify.js        words, numbers and elements
// The open job is in the address (#/jobs/<id>), so it survives a reload and Back closes it.

import { Actions } from "./actions.js";
import { GLOBAL_EVENTS_URL, setUnauthorizedHandler } from "./api.js";
import { setAttr, setText } from "./dom.js";
import { GLOBAL_EVENT_HANDLERS } from "./events.js";
import { JobList } from "./joblist.js";
import { JobView } from "./jobview.js";
import { Session } from "./session.js";
import { JobStore } from "./store.js";
import { EventStream } from "./streams.js";
import { Uploads } from "./uploads.js";

const $ = (id) => document.getElementById(id);

const store = new JobStore();
const actions = new Actions(store);
const list = new JobList(
  { list: $("jobs"), filters: $("filters"), empty: $("empty"), summary: $("summary") },
  store,
  actions,
);
const view = new JobView($("view"), store, actions, { onClose: () => closeView() });
new Uploads({ input: $("file-input"), pick: $("pick"), list: $("uploads"), overlay: $("drop-overlay") }, store);

// -- the connection indicator: the global stream's state, and whether the browser is online

const LABELS = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  closed: "Signed out",
};

const indicator = $("connection");

function showConnection() {
  const state = navigator.onLine ? globalStream.status : "offline";
  indicator.dataset.state = state;
  setText(indicator.querySelector(".connection-label"), LABELS[state] ?? state);
  const seconds = globalStream.retryAt ? Math.max(1, Math.round((globalStream.retryAt - Date.now()) / 1000)) : 0;
  const titles = {
    connecting: "Connecting to the server.",
    live: "Connected: every change shows as it happens.",
    reconnecting: "The connection dropped; catching up as soon as the server answers.",
    offline: navigator.onLine
      ? `The server refused the connection.${seconds ? ` Trying again in about ${seconds} s.` : ""}`
      : "This device is offline.",
    closed: "Sign in to see the jobs.",
  };
  setAttr(indicator, "title", titles[state]);
}

const globalStream = new EventStream({
  url: () => GLOBAL_EVENTS_URL,
  handlers: GLOBAL_EVENT_HANDLERS,
  target: store,
  onStatus: showConnection,
  // Refused for good (503 or 429: too many streams; 401: signed out): find out which.
  onClosed: async (stream) => {
    if (await session.check()) stream.reconnectLater();
  },
});

const session = new Session(
  {
    dialog: $("signin"),
    form: $("signin-form"),
    input: $("signin-key"),
    error: $("signin-error"),
    account: $("account"),
    owner: $("account-owner"),
    signOutButton: $("sign-out"),
  },
  {
    onSignedIn: () => {
      globalStream.open();
      route(); // the job in the address, if any
    },
    // Nothing of the last person's stays on the page: no stream, no job view, no list.
    onSignedOut: () => {
      globalStream.close();
      view.close();
      store.clear();
    },
  },
);
setUnauthorizedHandler(() => session.check());

window.addEventListener("online", () => {
  showConnection();
  if (globalStream.source === null && globalStream.status !== "closed") globalStream.open(); // skip the backoff
});
window.addEventListener("offline", showConnection);
showConnection();

// -- the open job, from the address

function route() {
  const match = /^#\/jobs\/([0-9a-f]{16})$/.exec(location.hash);
  const id = match ? match[1] : null;
  document.body.classList.toggle("has-view", id !== null);
  list.select(id);
  if (id === null) {
    const was = view.id;
    view.close();
    const link = was && list.linkOf(was);
    if (link) link.focus(); // back where the person was
    return;
  }
  if (view.id !== id && session.ready) {
    view.open(id);
    view.focus();
  }
}

function closeView() {
  if (location.hash) history.pushState(null, "", location.pathname + location.search);
  route();
}

window.addEventListener("hashchange", route);
window.addEventListener("popstate", route);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && view.id !== null && !event.defaultPrevented && !$("signin").open) closeView();
});

session.start();
