// Building the page with DOM calls only. Every value from the registry (names, tags, descriptions,
// comments, file names) enters the document as a text node inside an isolating <bdi>, never as
// markup: `<script>` or `"onerror=` stay characters, and bidirectional controls are shown as visible
// marks instead of reordering what is around them (or within them).

const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;

/** An element with attributes (strings; `on…` functions become listeners) and children (nodes or text). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Append children: nodes as they are, anything else as text; arrays are flattened, nullish skipped. */
export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** A user-controlled string, isolated; each bidirectional control character shown as a mark. */
export function text(value) {
  const isolated = h("bdi", { class: "value" });
  const raw = String(value ?? "");
  let start = 0;
  for (const match of raw.matchAll(BIDI_CONTROLS)) {
    isolated.append(raw.slice(start, match.index));
    const code = match[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
    isolated.append(h("span", { class: "control", title: `bidirectional control character U+${code}` }, `U+${code}`));
    start = match.index + match[0].length;
  }
  isolated.append(raw.slice(start));
  return isolated;
}

/** JSON for display, with bidirectional controls escaped (they are valid JSON escapes). */
export function json(value) {
  const shown = JSON.stringify(value, null, 2).replace(BIDI_CONTROLS, (c) => `\\u${c.codePointAt(0).toString(16).padStart(4, "0")}`);
  return h("pre", { class: "json", dir: "ltr" }, shown);
}

/** A time as `YYYY-MM-DD HH:MM:SS UTC` in a <time>, or a dash. */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return text(iso);
  const shown = moment.toISOString().replace("T", " ").replace(/\.\d+Z$/u, " UTC");
  return h("time", { datetime: moment.toISOString() }, shown);
}

export function bytes(size) {
  if (typeof size !== "number") return "—";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let shown = size;
  let unit = 0;
  while (shown >= 1024 && unit < units.length - 1) {
    shown /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} bytes` : `${shown.toFixed(1)} ${units[unit]} (${size.toLocaleString("en")} bytes)`;
}

/** A table with a caption and header cells; `rows` are arrays of cells (nodes or text). */
export function table(caption, headers, rows, empty = "Nothing here yet.") {
  if (rows.length === 0) return h("p", { class: "muted empty" }, empty);
  const name = caption.text ?? caption;
  // A wide table scrolls sideways in its own box, which keyboard users must be able to reach.
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": `${name} (table)` },
    h(
      "table",
      {},
      h("caption", { class: caption.hidden ? "visually-hidden" : undefined }, name),
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
    ),
  );
}

/** `key=value` chips for tags or metrics. */
export function pairs(record, empty = "—") {
  const entries = Object.entries(record ?? {});
  if (entries.length === 0) return h("span", { class: "muted" }, empty);
  return h("ul", { class: "chips" }, entries.map(([key, value]) => h("li", {}, text(key), "=", text(value))));
}

/** A definition list from [term, description] pairs (skipping empty ones). */
export function facts(entries, attributes = {}) {
  return h(
    "dl",
    { class: "facts", ...attributes },
    entries.filter(([, value]) => value !== undefined && value !== null).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, status);
}

let labels = 0;
/** A labelled form control (the label is tied to it by id). */
export function field(label, control, hint) {
  labels += 1;
  const id = control.id || `field-${labels}`;
  control.id = id;
  const described = hint ? `${id}-hint` : undefined;
  if (described) control.setAttribute("aria-describedby", described);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("span", { class: "hint", id: described }, hint) : null);
}
