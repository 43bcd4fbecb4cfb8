// Cancel, retry and delete, from the list and from the job view alike. The server's answer is
// put into the store at once; a refusal shows the server's message.

import { cancelJob, deleteJob, retryJob } from "./api.js";
import { toast } from "./notify.js";

const CONFIRM_MS = 4000;

export class Actions {
  constructor(store) {
    this.store = store;
  }

  /** Run `action` ("cancel", "retry", "delete") on job `id`; `button` is the button pressed. */
  async run(action, id, button) {
    const job = this.store.get(id);
    const name = job ? job.filename : "this job";
    if (action === "delete" && !this.confirmed(button, name)) return;
    button.disabled = true;
    try {
      if (action === "cancel") this.store.upsert(await cancelJob(id));
      else if (action === "retry") this.store.upsert(await retryJob(id));
      else if (action === "delete") {
        await deleteJob(id);
        this.store.remove(id);
      }
    } catch (error) {
      toast(`Could not ${action} ${name}: ${error.message}`);
    } finally {
      button.disabled = false;
      this.unconfirm(button);
    }
  }

  /**
   * Deleting throws the extracted text away, so it takes two presses: the first turns the
   * button into "Confirm delete" for a few seconds.
   */
  confirmed(button, name) {
    if (button.dataset.confirming === "1") return true;
    button.dataset.confirming = "1";
    button.dataset.label = button.textContent;
    button.dataset.ariaLabel = button.getAttribute("aria-label") || "";
    button.textContent = "Confirm delete";
    button.setAttribute("aria-label", `Confirm: delete ${name} and its text`);
    button.classList.add("danger");
    button.confirmTimer = setTimeout(() => this.unconfirm(button), CONFIRM_MS);
    return false;
  }

  unconfirm(button) {
    if (button.dataset.confirming !== "1") return;
    clearTimeout(button.confirmTimer);
    delete button.dataset.confirming;
    button.textContent = button.dataset.label;
    if (button.dataset.ariaLabel) button.setAttribute("aria-label", button.dataset.ariaLabel);
    else button.removeAttribute("aria-label");
    button.classList.remove("danger");
  }
}
