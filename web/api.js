// The HTTP API as the UI uses it, and its one error shape: {"error": {"code", "message"}}
// (shared_schemas/error.json). Every failure becomes an ApiError with the server's code and message.

export const API = "/api/v1";
export const GLOBAL_EVENTS_URL = `${API}/events`;

/** An answer that was not a success: the HTTP status, the error code and the server's message. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The ApiError for a response body (the error shape, or whatever else a proxy may have sent). */
function errorFrom(status, bodyText, retryAfter) {
  try {
    const body = JSON.parse(bodyText);
    if (body && body.error && typeof body.error.message === "string") {
      return new ApiError(status, body.error.code, body.error.message, retryAfter);
    }
  } catch {
    // not JSON: fall through to a message made from the status
  }
  return new ApiError(status, "http_" + status, `the server answered ${status || "nothing"}`, retryAfter);
}

const NETWORK = () => new ApiError(0, "network", "could not reach the server");

let onUnauthorized = () => {};

/** Who to tell when the server answers 401 (no key, or the session cookie expired). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

function failed(error) {
  if (error.status === 401) onUnauthorized(error);
  return error;
}

async function request(method, path, body = undefined, { quiet = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    // Same origin: the browser sends the session cookie, and an Origin header on every
    // state change (the server wants it on cookie-signed POSTs and DELETEs).
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw NETWORK();
  }
  if (response.status === 204) return null;
  const text = await response.text();
  if (!response.ok) {
    const error = errorFrom(response.status, text, response.headers.get("Retry-After"));
    throw quiet ? error : failed(error);
  }
  return JSON.parse(text);
}

// The browser's session, when the server has API keys: {"keys", "owner", "role"}.
export const getSession = () => request("GET", `${API}/session`);
export const signIn = (key) => request("POST", `${API}/session`, { key }, { quiet: true }); // a 401 here is an answer
export const signOut = () => request("DELETE", `${API}/session`);

export const getJob = (id) => request("GET", `${API}/jobs/${id}`);
export const cancelJob = (id) => request("POST", `${API}/jobs/${id}/cancel`);
export const retryJob = (id) => request("POST", `${API}/jobs/${id}/retry`);
export const deleteJob = (id) => request("DELETE", `${API}/jobs/${id}`);

/** Where a job's result can be downloaded; partial=true while the job has not finished. */
export function resultUrl(id, format, partial = false) {
  return `${API}/jobs/${id}/result?format=${format}${partial ? "&partial=1" : ""}`;
}

/** A job's event stream with each page's text, resuming after event id `after`. */
export function jobEventsUrl(id, after = 0) {
  return `${API}/jobs/${id}/events?text=1${after > 0 ? `&after=${after}` : ""}`;
}

function randomKey() {
  // crypto.randomUUID exists only in secure contexts; getRandomValues everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sendOnce(file, key, onProgress) {
  return new Promise((resolve, reject) => {
    // XMLHttpRequest rather than fetch: it reports upload progress.
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API}/jobs`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Idempotency-Key", key);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, "bad_response", "the server's answer was not JSON"));
        }
      } else {
        reject(failed(errorFrom(xhr.status, xhr.responseText, xhr.getResponseHeader("Retry-After"))));
      }
    });
    xhr.addEventListener("error", () => reject(NETWORK()));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the upload was stopped")));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/**
 * Submit one file as its own job (multipart, field "file"). A dropped connection is retried
 * with the same Idempotency-Key, so a retry never makes a second job; an answer from the
 * server (415, 413, 429, 400, …) is final and rejects with its ApiError.
 */
export async function uploadFile(file, onProgress) {
  const key = randomKey();
  const pauses = [500, 1500, 4000];
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await sendOnce(file, key, onProgress);
    } catch (error) {
      if (error.status !== 0 || error.code === "aborted" || attempt >= pauses.length) throw error;
      await new Promise((resolve) => setTimeout(resolve, pauses[attempt]));
    }
  }
}
