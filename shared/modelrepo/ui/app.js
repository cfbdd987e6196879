// The registry's page: hash routes (#/, #/experiments/ID, #/experiments/ID/versions/N, #/problems)
// rendered from the HTTP API. Lists page with the API's own cursors, so an experiment with 10,000
// versions costs its first view what one with 10 does.

import { ApiError, actor, get, onKeyNeeded, path, post, rememberActor, send, setKey, storedKey, url } from "./api.js";
import { append, badge, bytes, facts, field, h, json, pairs, table, text, when } from "./dom.js";

export const PAGE = 10;
const HISTORY_PAGE = 10;
const STATUSES = ["pending", "approved", "rejected"];

const main = document.getElementById("main");
const live = document.getElementById("status");
let rendering = 0;

function announce(message) {
  live.textContent = "";
  live.textContent = message;
}

function errorBox(error, what) {
  const detail = error instanceof ApiError ? error.detail : String(error?.message ?? error);
  return h("div", { class: "error", role: "alert" }, what ? `${what}: ` : "", text(detail));
}

function notice(message) {
  return h("p", { class: "notice", role: "status" }, message);
}

/** Append children, skipping absent ones (Element.append would write "null"). */
function add(element, ...children) {
  return append(element, children);
}

function link(href, ...children) {
  return h("a", { href }, ...children);
}

const experimentHref = (id) => `#/experiments/${encodeURIComponent(id)}`;
const versionHref = (id, version) => `${experimentHref(id)}/versions/${version}`;

function section(title, ...children) {
  const id = `section-${title.toLowerCase().replace(/[^a-z0-9]+/gu, "-")}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

// --- paging -------------------------------------------------------------------------------------

/** A list shown one page at a time: `load(cursor)` answers `{items, nextCursor}`. */
function pager(label, load, render) {
  const body = h("div", { class: "pager-body", "aria-live": "polite" });
  const where = h("span", { class: "page-number" });
  const previous = h("button", { type: "button", class: "quiet", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "quiet", disabled: true }, "Next page");
  previous.setAttribute("aria-label", `Previous page of ${label}`);
  next.setAttribute("aria-label", `Next page of ${label}`);
  const cursors = [null];
  let index = 0;
  let following = null;

  async function show(wanted) {
    previous.disabled = true;
    next.disabled = true;
    body.setAttribute("aria-busy", "true");
    try {
      const page = await load(cursors[wanted]);
      index = wanted;
      following = page.nextCursor ?? null;
      cursors.length = index + 1;
      body.replaceChildren(render(page.items));
      where.textContent = `Page ${index + 1}`;
    } catch (error) {
      body.replaceChildren(errorBox(error, `Could not load ${label}`));
    } finally {
      body.removeAttribute("aria-busy");
      previous.disabled = index === 0;
      next.disabled = following === null;
    }
  }

  next.addEventListener("click", () => {
    cursors[index + 1] = following;
    show(index + 1);
  });
  previous.addEventListener("click", () => show(index - 1));
  const element = h(
    "div",
    { class: "paged", "data-list": label },
    body,
    h("div", { class: "pager", role: "group", "aria-label": `Pages of ${label}` }, previous, where, next),
  );
  return { element, ready: show(0), reload: () => show(index) };
}

// --- experiments ----------------------------------------------------------------------------------

function experimentRows(items) {
  return table(
    { text: "Experiments", hidden: true },
    ["Experiment", "Latest version", "Versions", "Description", "Tags", "Updated"],
    items.map((e) => [
      link(experimentHref(e.experimentId), text(e.experimentId)),
      e.latestVersion ? link(versionHref(e.experimentId, e.latestVersion), `version ${e.latestVersion}`) : "—",
      String(e.versionCount ?? 0),
      text(e.description ?? ""),
      pairs(e.tags),
      when(e.updatedAt),
    ]),
    "No experiment matches.",
  );
}

function versionRows(items, { withExperiment = false, targets = new Map() } = {}) {
  const headers = [
    ...(withExperiment ? ["Experiment"] : []),
    "Version",
    "Approval",
    "Targets",
    "Tags",
    "Metrics",
    "Registered",
    "Description",
  ];
  return table(
    { text: "Versions", hidden: true },
    headers,
    items.map((m) => [
      ...(withExperiment ? [link(experimentHref(m.experimentId), text(m.experimentId))] : []),
      h(
        "span",
        {},
        link(versionHref(m.experimentId, m.version), `version ${m.version}`),
        m.archivedAt ? h("span", { class: "badge badge-archived" }, "archived") : null,
        m.deleted ? h("span", { class: "badge badge-deleted" }, "deleted") : null,
      ),
      badge(m.approval?.status ?? "pending"),
      (targets.get(m.version) ?? []).length ? h("ul", { class: "chips" }, targets.get(m.version).map((t) => h("li", { class: "target" }, `@${t}`))) : "—",
      pairs(m.tags),
      pairs(m.metrics),
      h("span", {}, when(m.registeredAt), " by ", text(m.registeredBy)),
      text(m.description ?? ""),
    ]),
    "No version matches.",
  );
}

function tagQuery(raw) {
  const trimmed = raw.trim();
  if (!trimmed) return {};
  const at = trimmed.indexOf("=");
  if (at <= 0) throw new ApiError(400, `write the tag as key=value, not ${JSON.stringify(trimmed)}`);
  return { [`tag.${trimmed.slice(0, at).trim()}`]: trimmed.slice(at + 1).trim() };
}

function statusSelect(name) {
  return h("select", { name }, h("option", { value: "" }, "any"), STATUSES.map((s) => h("option", { value: s }, s)));
}

async function experimentsView(view) {
  add(view, h("h1", { tabindex: "-1" }, "Experiments"));
  const prefix = h("input", { type: "search", name: "prefix", autocomplete: "off", spellcheck: "false" });
  const form = h(
    "form",
    { class: "inline", role: "search", "aria-label": "Experiments" },
    field("Experiment id starts with", prefix),
    h("button", { type: "submit" }, "Search"),
  );
  const results = h("div", {});
  add(view, form, results);

  const list = () => {
    const wanted = prefix.value.trim();
    const shown = pager("experiments", (cursor) => get("experiments", { limit: PAGE, cursor, prefix: wanted }), experimentRows);
    results.replaceChildren(shown.element);
    return shown.ready;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    list().then(() => announce(prefix.value.trim() ? `Experiments starting with ${prefix.value.trim()}` : "All experiments"));
  });

  const tag = h("input", { type: "text", name: "tag", autocomplete: "off", spellcheck: "false", placeholder: "stage=live" });
  const status = statusSelect("status");
  const found = h("div", {});
  const searchForm = h(
    "form",
    { class: "inline", role: "search", "aria-label": "Versions of every experiment" },
    field("Tag (key=value)", tag),
    field("Approval", status),
    h("button", { type: "submit" }, "Find versions"),
  );
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    let query;
    try {
      query = { ...tagQuery(tag.value), status: status.value };
    } catch (error) {
      found.replaceChildren(errorBox(error));
      return;
    }
    const shown = pager("matching versions", (cursor) => get("search/models", { limit: PAGE, cursor, ...query }), (items) =>
      versionRows(items, { withExperiment: true }),
    );
    found.replaceChildren(shown.element);
    shown.ready.then(() => announce("Search done"));
  });
  add(view, section("Find versions across experiments", searchForm, found));
  await list();
}

// --- one experiment -------------------------------------------------------------------------------

function timelineItems(items, current) {
  if (items.length === 0) return h("p", { class: "muted" }, "No deployment yet.");
  return h(
    "ol",
    { class: "timeline" },
    items.map((d) =>
      h(
        "li",
        {},
        when(d.deployedAt),
        " ",
        link(versionHref(d.experimentId, d.version), `version ${d.version}`),
        " by ",
        text(d.deployedBy),
        d.previousVersion ? h("span", { class: "muted" }, ` (was version ${d.previousVersion})`) : null,
        current && current.deployedAt === d.deployedAt && current.version === d.version ? h("span", { class: "badge badge-current" }, "current") : null,
      ),
    ),
  );
}

function targetsByVersion(deployments) {
  const byVersion = new Map();
  for (const d of deployments) byVersion.set(d.version, [...(byVersion.get(d.version) ?? []), d.target]);
  return byVersion;
}

function actorField() {
  const input = h("input", { type: "text", name: "by", autocomplete: "name", required: true, value: actor() });
  input.addEventListener("change", () => rememberActor(input.value.trim()));
  return { input, element: field("Your name", input, "recorded in the audit trail") };
}

function rollbackButton(experimentId, deployment, after) {
  const button = h("button", { type: "button", class: "danger" }, `Roll back ${deployment.target}…`);
  button.addEventListener("click", async () => {
    const by = actor();
    const name = by || (await askName());
    if (!name) return;
    const sure = await confirmAction(
      `Roll back ${deployment.target}?`,
      `${deployment.target} runs version ${deployment.version} of ${experimentId}; rolling back deploys the version it ran before, as ${name}.`,
      "Roll back",
    );
    if (!sure) return;
    try {
      const done = await post(path("experiments", experimentId, "deployments", deployment.target, "rollback"), { deployedBy: name });
      announce(`${done.target} now runs version ${done.version}`);
      after();
    } catch (error) {
      button.after(errorBox(error, "Rollback refused"));
    }
  });
  return button;
}

async function experimentView(view, experimentId) {
  const [experiment, deployments] = await Promise.all([
    get(path("experiments", experimentId)),
    get(path("experiments", experimentId, "deployments")),
  ]);
  const rerender = () => render();
  add(view, 
    h("p", { class: "crumbs" }, link("#/", "Experiments"), " / "),
    h("h1", { tabindex: "-1" }, text(experiment.experimentId)),
    experiment.description ? h("p", { class: "lead" }, text(experiment.description)) : null,
    facts([
      ["Latest version", experiment.latestVersion ? link(versionHref(experimentId, experiment.latestVersion), `version ${experiment.latestVersion}`) : "—"],
      ["Versions", String(experiment.versionCount ?? 0)],
      ["Tags", pairs(experiment.tags)],
      ["Created", when(experiment.createdAt)],
      ["Updated", when(experiment.updatedAt)],
    ], { id: "summary" }),
  );

  // Versions, newest first, with filters.
  const status = statusSelect("status");
  const tag = h("input", { type: "text", name: "tag", autocomplete: "off", spellcheck: "false", placeholder: "stage=live" });
  const archived = h("input", { type: "checkbox", name: "archived" });
  const deleted = h("input", { type: "checkbox", name: "deleted" });
  const filters = h(
    "form",
    { class: "inline", "aria-label": "Filter versions" },
    field("Approval", status),
    field("Tag (key=value)", tag),
    h("div", { class: "check" }, archived, h("label", { for: (archived.id = "show-archived") }, "Archived too")),
    h("div", { class: "check" }, deleted, h("label", { for: (deleted.id = "show-deleted") }, "Deleted too")),
    h("button", { type: "submit" }, "Filter"),
  );
  const versions = h("div", {});
  const targets = targetsByVersion(deployments.items);
  const listVersions = () => {
    let query;
    try {
      query = {
        ...tagQuery(tag.value),
        status: status.value,
        archived: archived.checked ? "true" : undefined,
        deleted: deleted.checked ? "true" : undefined,
      };
    } catch (error) {
      versions.replaceChildren(errorBox(error));
      return Promise.resolve();
    }
    const shown = pager(
      "versions",
      (cursor) => get(path("experiments", experimentId, "models"), { limit: PAGE, cursor, ...query }),
      (items) => versionRows(items, { targets }),
    );
    versions.replaceChildren(shown.element);
    return shown.ready;
  };
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    listVersions().then(() => announce("Versions filtered"));
  });
  add(view, section("Versions", filters, versions));

  // Deployments: one timeline per target, newest first.
  const timelines = h("div", { class: "timelines" });
  const waits = [listVersions()];
  if (deployments.items.length === 0) timelines.append(h("p", { class: "muted" }, "Never deployed."));
  for (const current of deployments.items) {
    const shown = pager(
      `deployments to ${current.target}`,
      (cursor) =>
        get(path("experiments", experimentId, "deployments", current.target), { limit: HISTORY_PAGE, cursor }).then((history) => ({
          items: history.history,
          nextCursor: history.nextCursor,
          current: history.current,
        })),
      (items) => timelineItems(items, current),
    );
    waits.push(shown.ready);
    timelines.append(
      h(
        "section",
        { class: "target-timeline", "aria-label": `Deployments to ${current.target}` },
        h("h3", {}, `@${current.target}`, " ", h("span", { class: "muted" }, `runs version ${current.version}`)),
        shown.element,
        current.previousVersion ? rollbackButton(experimentId, current, rerender) : null,
      ),
    );
  }
  add(view, section("Deployments", timelines));

  // The audit trail and the events, oldest first, as the API replays them.
  const audit = pager(
    "the audit trail",
    (cursor) => get(path("experiments", experimentId, "audit"), { limit: PAGE, cursor }),
    (items) =>
      table(
        { text: "Audit trail", hidden: true },
        ["When", "Who", "What", "Subject", "Details"],
        items.map((entry) => [when(entry.at), text(entry.actor), text(entry.action), text(entry.subject), detailsOf(entry.details)]),
        "No change yet.",
      ),
  );
  const events = pager(
    "events",
    (cursor) =>
      get(path("experiments", experimentId, "events"), { after: cursor ?? 0, limit: PAGE }).then((page) => ({
        items: page.items,
        nextCursor: page.nextCursor === null || page.nextCursor === undefined ? null : String(page.nextCursor),
      })),
    (items) =>
      table(
        { text: "Events", hidden: true },
        ["Sequence", "Type", "Time", "Actor", "Subject"],
        items.map((event) => [String(event.sequence), text(event.type), when(event.time), text(event.actor ?? ""), text(event.subject ?? "")]),
        "No event yet.",
      ),
  );
  waits.push(audit.ready, events.ready);
  add(view, section("Audit trail", h("p", { class: "muted" }, "Oldest first."), audit.element));
  add(view, section("Events", h("p", { class: "muted" }, "CloudEvents, oldest first; replay them from any sequence with the API."), events.element));
  await Promise.all(waits);
}

function detailsOf(details) {
  const entries = Object.entries(details ?? {});
  if (entries.length === 0) return "—";
  return h("ul", { class: "chips" }, entries.map(([key, value]) => h("li", {}, text(key), "=", text(typeof value === "string" ? value : JSON.stringify(value)))));
}

// --- one version --------------------------------------------------------------------------------

async function download(model, button) {
  const address = path("experiments", model.experimentId, "models", model.version, "download");
  if (!storedKey()) {
    // Nothing to add to the request: let the browser follow it (and any redirect to a signed link).
    window.location.assign(url(address).href);
    return;
  }
  try {
    const response = await send(address, { raw: true });
    if (response.type === "opaqueredirect") {
      throw new ApiError(307, "this host answers with a time-limited link on another origin, which this page may not fetch: use `modelrepo download` or the API with your key");
    }
    if (!response.ok) throw new ApiError(response.status, (await response.json().catch(() => ({}))).detail ?? response.statusText);
    const blob = await response.blob();
    const saved = URL.createObjectURL(blob);
    const anchor = h("a", { href: saved, download: model.artifactName.split("/").pop(), class: "visually-hidden" }, "download");
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    setTimeout(() => URL.revokeObjectURL(saved), 60_000);
    announce("Download started");
  } catch (error) {
    button.after(errorBox(error, "Download failed"));
  }
}

/** The version's files: today one artifact; a version with a `files` manifest lists each. */
function filesOf(model) {
  const files = Array.isArray(model.files) ? model.files : [{ name: model.artifactName, size: model.size, sha256: model.sha256 }];
  const button = h("button", { type: "button", disabled: Boolean(model.deleted) }, "Download");
  button.addEventListener("click", () => download(model, button));
  return [
    table(
      { text: "Files", hidden: true },
      ["Name", "Size", "SHA-256"],
      files.map((file) => [text(file.name), bytes(file.size), h("code", { class: "digest" }, file.sha256)]),
    ),
    model.deleted ? h("p", { class: "muted" }, "Deleted: the record stays, the bytes are gone.") : button,
  ];
}

function lineageOf(lineage) {
  if (!lineage) return h("p", { class: "muted" }, "No lineage recorded.");
  return facts([
    ["Source commit", lineage.sourceCommit ? h("code", {}, text(lineage.sourceCommit)) : undefined],
    // Dataset URIs stay text: a link could carry any scheme.
    ["Datasets", lineage.datasets?.length ? h("ul", {}, lineage.datasets.map((d) => h("li", {}, h("code", {}, text(d))))) : undefined],
    ["Notes", lineage.notes ? text(lineage.notes) : undefined],
  ]);
}

function keyValueTable(caption, record, empty) {
  return table({ text: caption, hidden: true }, ["Name", "Value"], Object.entries(record ?? {}).map(([k, v]) => [text(k), text(String(v))]), empty);
}

async function askName() {
  const { input, element } = actorField();
  const ok = await confirmAction("Who are you?", element, "Continue", input);
  const name = input.value.trim();
  if (ok && name) rememberActor(name);
  return ok ? name : "";
}

function approvalForm(model, who, after) {
  const comment = h("textarea", { name: "comment", rows: "2", maxlength: "1024" });
  const form = h(
    "form",
    { class: "stacked", "aria-label": "Approval" },
    field("Comment", comment, "optional, kept with the decision"),
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "submit", name: "status", value: "approved" }, "Approve"),
      h("button", { type: "submit", name: "status", value: "rejected", class: "danger" }, "Reject"),
      h("button", { type: "submit", name: "status", value: "pending", class: "quiet" }, "Back to pending"),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const statusWanted = event.submitter?.value ?? "approved";
    const by = who.value.trim();
    if (!by) return who.reportValidity();
    rememberActor(by);
    const body = { status: statusWanted, by };
    if (comment.value.trim()) body.comment = comment.value.trim();
    try {
      const done = await post(path("experiments", model.experimentId, "models", model.version, "approval"), body);
      announce(`Version ${done.version} is ${done.approval.status}`);
      after();
    } catch (error) {
      form.append(errorBox(error, "Not changed"));
    }
  });
  return form;
}

function deployForm(model, deployments, who, after) {
  const listId = "known-targets";
  const target = h("input", { type: "text", name: "target", required: true, list: listId, autocomplete: "off", spellcheck: "false", pattern: "[a-z][a-z0-9\\-]{0,31}" });
  const known = h("datalist", { id: listId }, deployments.map((d) => h("option", { value: d.target })));
  const form = h(
    "form",
    { class: "stacked", "aria-label": "Deploy" },
    field("Target", target, "lowercase letters, digits and '-', e.g. production"),
    known,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Deploy…")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const by = who.value.trim();
    if (!by) return who.reportValidity();
    rememberActor(by);
    const name = target.value.trim();
    const running = deployments.find((d) => d.target === name);
    const sure = await confirmAction(
      `Deploy version ${model.version}?`,
      `Deploy version ${model.version} of ${model.experimentId} to ${name}` +
        (running ? `, which runs version ${running.version} now` : ", a target it has never run") +
        `, as ${by}.`,
      "Deploy",
    );
    if (!sure) return;
    try {
      const done = await post(path("experiments", model.experimentId, "deployments"), { version: model.version, target: name, deployedBy: by });
      announce(`${done.target} now runs version ${done.version}`);
      after();
    } catch (error) {
      form.append(errorBox(error, "Deployment refused"));
    }
  });
  return form;
}

async function versionView(view, experimentId, version) {
  const [model, deployments] = await Promise.all([
    get(path("experiments", experimentId, "models", version)),
    get(path("experiments", experimentId, "deployments")),
  ]);
  const rerender = () => render();
  const running = deployments.items.filter((d) => d.version === model.version);
  const approval = model.approval ?? { status: "pending" };
  add(view, 
    h("p", { class: "crumbs" }, link("#/", "Experiments"), " / ", link(experimentHref(experimentId), text(experimentId)), " / "),
    h("h1", { tabindex: "-1" }, text(experimentId), ` version ${model.version}`),
    model.description ? h("p", { class: "lead" }, text(model.description)) : null,
    facts([
      [
        "Approval",
        h(
          "span",
          {},
          badge(approval.status),
          approval.by ? [" by ", text(approval.by)] : null,
          approval.at ? [" at ", when(approval.at)] : null,
          approval.comment ? [": ", text(approval.comment)] : null,
        ),
      ],
      ["Runs on", running.length ? h("ul", { class: "chips" }, running.map((d) => h("li", { class: "target" }, `@${d.target}`))) : "no target"],
      ["Registered", h("span", {}, when(model.registeredAt), " by ", text(model.registeredBy))],
      ["Run", h("code", {}, text(model.runId))],
      ["Archived", model.archivedAt ? h("span", {}, when(model.archivedAt), " by ", text(model.archivedBy ?? "")) : undefined],
      ["Deleted", model.deleted ? h("span", {}, when(model.deleted.at), " by ", text(model.deleted.by), model.deleted.reason ? [": ", text(model.deleted.reason)] : null) : undefined],
      ["Tags", pairs(model.tags)],
    ], { id: "summary" }),
  );
  if (!model.deleted) {
    const who = actorField();
    const forms = [h("div", {}, h("h3", {}, "Approve or reject"), approvalForm(model, who.input, rerender))];
    if (!model.archivedAt) forms.push(h("div", {}, h("h3", {}, "Deploy"), deployForm(model, deployments.items, who.input, rerender)));
    const rollbacks = running.filter((d) => d.previousVersion);
    if (rollbacks.length) {
      forms.push(h("div", {}, h("h3", {}, "Roll back"), h("div", { class: "buttons" }, rollbacks.map((d) => rollbackButton(experimentId, d, rerender)))));
    }
    add(view, section("Actions", who.element, h("div", { class: "actions" }, forms)));
  }
  add(view, section("Files", ...filesOf(model)));
  add(view, section("Metrics", keyValueTable("Metrics", model.metrics, "No metrics.")));
  add(view, section("Parameters", keyValueTable("Parameters", model.params, "No parameters.")));
  add(view, section("Signature", model.signature ? json(model.signature) : h("p", { class: "muted" }, "No signature.")));
  add(view, section("Lineage", lineageOf(model.lineage)));
}

// --- rejections and dead letters ------------------------------------------------------------------

async function problemsView(view) {
  add(view, h("h1", { tabindex: "-1" }, "Rejections and dead letters"));
  const rejections = pager(
    "rejections",
    (cursor) => get("rejections", { limit: PAGE, cursor }),
    (items) =>
      table(
        { text: "Rejections", hidden: true },
        ["Object", "Why", "Size", "Uploaded"],
        items.map((r) => [h("code", {}, text(r.key)), text(r.reason), bytes(r.size), when(r.uploadedAt)]),
        "No upload was rejected.",
      ),
  );
  const letters = pager(
    "dead letters",
    () => get("dead-letters", { limit: 100 }).then((page) => ({ items: page.items, nextCursor: null })),
    (items) =>
      table(
        { text: "Dead letters", hidden: true },
        ["Handle", "Source", "About", "Failed", "Detail"],
        items.map((d) => [h("code", {}, text(d.handle)), text(d.source), h("ul", {}, d.keys.map((k) => h("li", {}, text(k)))), when(d.failedAt), text(d.detail)]),
        "Nothing was given up on.",
      ),
  );
  add(view, 
    section("Rejections", h("p", { class: "muted" }, "Uploads that are not artifacts, with the reason."), rejections.element),
    section("Dead letters", h("p", { class: "muted" }, "Upload notifications given up on, and event deliveries a subscriber has not accepted. `modelrepo replay` tries them again."), letters.element),
  );
  await Promise.all([rejections.ready, letters.ready]);
}

// --- dialogs --------------------------------------------------------------------------------------

/** A modal question; `message` is text or a node; resolves true on confirm. */
function confirmAction(title, message, confirmLabel, focus) {
  const dialog = document.getElementById("confirm-dialog");
  const form = document.getElementById("confirm-form");
  document.getElementById("confirm-title").textContent = title;
  const body = document.getElementById("confirm-text");
  body.replaceChildren(message instanceof Node ? message : String(message));
  document.getElementById("confirm-yes").textContent = confirmLabel;
  return new Promise((resolve) => {
    const finish = (answer) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      no.removeEventListener("click", onNo);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      finish(true);
    };
    // A close event queued by the previous question may arrive after this one opened: only a
    // close that left the dialog closed (Escape) is an answer.
    const onClose = () => dialog.open || finish(false);
    const onNo = () => finish(false);
    const no = document.getElementById("confirm-no");
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    no.addEventListener("click", onNo);
    dialog.showModal();
    (focus ?? no).focus();
  });
}

function keyDialog(wrong) {
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  document.getElementById("key-why").textContent = wrong
    ? "The registry refused this key. Enter the right one; it is kept in this tab only."
    : "This registry needs a key. It is kept in this tab only and sent with each call to the API.";
  input.value = "";
  return new Promise((resolve) => {
    const finish = (answer) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      cancel.removeEventListener("click", onCancel);
      forget.removeEventListener("click", onForget);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      setKey(input.value.trim());
      finish(Boolean(input.value.trim()));
    };
    const onClose = () => dialog.open || finish(false);
    const onCancel = () => finish(false);
    const onForget = () => {
      setKey(null);
      announce("The key is forgotten");
      finish(false);
    };
    const cancel = document.getElementById("key-cancel");
    const forget = document.getElementById("key-forget");
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    cancel.addEventListener("click", onCancel);
    forget.addEventListener("click", onForget);
    dialog.showModal();
    input.focus();
  });
}

// --- routing --------------------------------------------------------------------------------------

const ROUTES = [
  [/^#?\/?$/u, () => ["experiments", (view) => experimentsView(view)]],
  [/^#\/experiments\/([^/]+)$/u, (id) => ["experiments", (view) => experimentView(view, decodeURIComponent(id))]],
  [/^#\/experiments\/([^/]+)\/versions\/([^/]+)$/u, (id, v) => ["experiments", (view) => versionView(view, decodeURIComponent(id), decodeURIComponent(v))]],
  [/^#\/problems$/u, () => ["problems", (view) => problemsView(view)]],
];

async function render({ focus = false } = {}) {
  const hash = window.location.hash;
  if (hash && !hash.startsWith("#/")) return; // an in-page anchor such as the skip link
  rendering += 1;
  const mine = rendering;
  const view = h("div", { class: "view" });
  let area = "";
  let build = (target) => {
    target.append(h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, "No such page. ", link("#/", "See the experiments.")));
  };
  for (const [pattern, choose] of ROUTES) {
    const found = pattern.exec(hash);
    if (found) {
      [area, build] = choose(...found.slice(1));
      break;
    }
  }
  for (const item of document.querySelectorAll("[data-nav]")) {
    if (item.dataset.nav === area) item.setAttribute("aria-current", "page");
    else item.removeAttribute("aria-current");
  }
  main.setAttribute("aria-busy", "true");
  try {
    await build(view);
  } catch (error) {
    add(view, errorBox(error, "Could not load this page"));
  }
  if (mine !== rendering) return; // a later navigation won
  main.replaceChildren(view);
  main.removeAttribute("aria-busy");
  const heading = view.querySelector("h1");
  document.title = heading ? `${heading.textContent} · modelrepo` : "modelrepo";
  if (focus && heading) heading.focus();
  main.dataset.ready = String(mine);
}

onKeyNeeded(keyDialog);
document.getElementById("key-button").addEventListener("click", () => keyDialog(false).then((got) => got && render()));
document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", () => render({ focus: true }));
render();
