// Calls to the registry's HTTP API, relative to where this file is served (`<root>/api/ui/api.js`),
// so the page works under any prefix a host puts in front (an API Gateway stage, Azure's /api).
//
// The key, where the host wants one, is asked for on the first 401 and kept in sessionStorage: it
// lives as long as the tab and is sent only to this origin, as `Authorization: Bearer` (modelrepo
// serve) and `x-functions-key` (Azure Functions), which each host reads and the other ignores.

export const API_ROOT = new URL("../", import.meta.url);
const KEY = "modelrepo.apiKey";
const ACTOR = "modelrepo.actor";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export function actor() {
  return sessionStorage.getItem(ACTOR) ?? "";
}

export function rememberActor(name) {
  sessionStorage.setItem(ACTOR, name);
}

/** A path below /api/ from segments, each percent-encoded. */
export function path(...segments) {
  return segments.map((segment) => encodeURIComponent(String(segment))).join("/");
}

export function url(relative, query = {}) {
  const target = new URL(relative, API_ROOT);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.set(name, String(value));
  }
  return target;
}

function headers(body) {
  const sent = { Accept: "application/json" };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const key = storedKey();
  if (key) {
    sent.Authorization = `Bearer ${key}`;
    sent["x-functions-key"] = key;
  }
  return sent;
}

let asking = null;
let keyPrompt = async () => false;

/** The page registers how to ask for a key; concurrent 401s share one question. */
export function onKeyNeeded(prompt) {
  keyPrompt = prompt;
}

function askForKey(wrong) {
  if (asking === null) {
    asking = keyPrompt(wrong).finally(() => {
      asking = null;
    });
  }
  return asking;
}

async function problemOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") return body.detail;
  } catch {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`.trim();
}

/** Fetch and check: an ApiError naming the problem unless 2xx; asks for a key on 401 and retries. */
export async function send(relative, { method = "GET", body, query, raw = false } = {}) {
  for (;;) {
    const sentKey = storedKey();
    const response = await fetch(url(relative, query), {
      method,
      headers: headers(body),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      redirect: raw ? "manual" : "follow",
    });
    if (response.status === 401) {
      if (await askForKey(Boolean(sentKey))) continue;
      throw new ApiError(response.status, "this registry needs an API key: choose “API key” above to enter it");
    }
    if (raw) return response;
    if (!response.ok) throw new ApiError(response.status, await problemOf(response));
    return response.status === 204 ? null : response.json();
  }
}

export const get = (relative, query) => send(relative, { query });
export const post = (relative, body) => send(relative, { method: "POST", body });
