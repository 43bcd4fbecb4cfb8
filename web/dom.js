// A tiny element builder. Text always goes in as textContent, never as HTML: file names and
// page text come from uploads, so nothing here ever parses a string as markup.

/**
 * el("button", { class: "btn", type: "button", dataset: { action: "cancel" } }, "Cancel")
 * Attributes are set with setAttribute (none of them is a style or an on* handler);
 * children are nodes or strings (strings become text nodes).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element with attributes. */
export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

/** Set an element's text only when it changed (a write costs a style recalculation, a read does not). */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Set or remove an attribute only when it changed. */
export function setAttr(node, name, value) {
  if (value === null || value === undefined || value === false) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
    return;
  }
  const text = value === true ? "" : String(value);
  if (node.getAttribute(name) !== text) node.setAttribute(name, text);
}

/** Show or hide an element with the hidden attribute. */
export function show(node, visible) {
  if (node.hidden === visible) node.hidden = !visible;
}

/**
 * A progress bar with its values for assistive technology: role=progressbar with
 * aria-valuenow / aria-valuemax (pages done / total) and aria-valuetext, plus a visible fill.
 */
export function progressBar(label) {
  const fill = el("div", { class: "bar-fill" });
  const bar = el("div", { class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": 0 }, fill);
  return { bar, fill };
}

/** Update a bar from pages done and total (total null = not known yet: indeterminate). */
export function updateProgress({ bar, fill }, done, total, percent) {
  if (total === null || total === undefined) {
    setAttr(bar, "aria-valuenow", null);
    setAttr(bar, "aria-valuemax", null);
    setAttr(bar, "aria-valuetext", "not started");
    setWidth(fill, "0%");
    return;
  }
  setAttr(bar, "aria-valuemax", total);
  setAttr(bar, "aria-valuenow", done);
  setAttr(bar, "aria-valuetext", `${done} of ${total} pages, ${percent} %`);
  const width = `${(Math.min(1, total === 0 ? 1 : done / total) * 100).toFixed(2)}%`;
  setWidth(fill, width);
}

function setWidth(node, width) {
  // Compared with the last value written: the CSSOM normalises what it reads back ("12.50%" → "12.5%").
  if (node.lastWidth === width) return;
  node.lastWidth = width;
  node.style.width = width;
}
