// Signing in, for a server with API keys. The browser trades its key once for an HttpOnly
// session cookie (POST /api/v1/session), so EventSource works with no key in any URL; the key
// itself is never stored by the page. Without keys the server answers {"keys": false} and
// none of this shows.

import { getSession, signIn, signOut } from "./api.js";
import { setText, show } from "./dom.js";

export class Session {
  /** onSignedIn() starts (or restarts) everything that needs the server. */
  constructor({ dialog, form, input, error, account, owner, signOutButton }, { onSignedIn, onSignedOut }) {
    this.dialog = dialog;
    this.input = input;
    this.error = error;
    this.account = account;
    this.owner = owner;
    this.onSignedIn = onSignedIn;
    this.onSignedOut = onSignedOut;
    this.info = null;
    this.started = false;
    this.checking = null;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    // Without a key there is nothing to show: the dialog stays until someone signs in.
    dialog.addEventListener("cancel", (event) => event.preventDefault());
    signOutButton.addEventListener("click", () => this.leave());
  }

  get signedOut() {
    return this.info !== null && this.info.keys && this.info.owner === null;
  }

  /** Started, and not waiting for a key. */
  get ready() {
    return this.started && !this.signedOut;
  }

  /** Find out whether we may go on; ask for the key if not. */
  async start() {
    await this.check("");
    this.started = true;
    if (!this.signedOut) this.onSignedIn();
  }

  /**
   * Ask the server whether the session is still good (after a 401, or a stream the server
   * closed). True when we may carry on; false when the sign-in dialog is up.
   */
  check(message = "Your session has ended. Sign in again with your API key.") {
    this.checking ??= getSession()
      .then((info) => {
        this.info = info;
        this.showAccount();
        if (this.signedOut) this.ask(message);
        return !this.signedOut;
      })
      .catch(() => true) // the server is unreachable: the caller's own backoff deals with that
      .finally(() => {
        this.checking = null;
      });
    return this.checking;
  }

  ask(message = "") {
    this.onSignedOut();
    setText(this.error, message);
    show(this.error, message !== "");
    if (!this.dialog.open) this.dialog.showModal();
    this.input.focus();
  }

  async submit() {
    const key = this.input.value.trim();
    if (!key) return;
    try {
      this.info = await signIn(key);
    } catch (error) {
      this.ask(error.message);
      this.input.select();
      return;
    }
    this.input.value = "";
    this.dialog.close();
    this.showAccount();
    this.onSignedIn();
  }

  async leave() {
    try {
      await signOut();
    } catch {
      // the cookie may already be gone; the check below asks again either way
    }
    this.info = { keys: true, owner: null, role: null };
    this.showAccount();
    this.ask();
  }

  showAccount() {
    const signedIn = this.info !== null && this.info.keys && this.info.owner !== null;
    show(this.account, signedIn);
    if (signedIn) setText(this.owner, this.info.role === "admin" ? `${this.info.owner} (admin)` : this.info.owner);
  }
}
