// The admin API client: every call carries the key from session storage in X-API-KEY
// (never in a URL). A 401 signs the user out.

const KEY = 'pylon.adminKey';

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

/** An error answer of the admin API: HTTP status and its `error_msg`. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = () => {};

/** Sets what happens when the API refuses the key (401). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/**
 * Calls `method /apisix/admin/<path>` with an optional JSON body; resolves to the JSON
 * answer, rejects with ApiError. `key` overrides the session's key (sign-in).
 */
export async function api(method, path, body, key) {
  const headers = { 'X-API-KEY': key ?? session.key ?? '', Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch('/apisix/admin/' + path, init);
  } catch (e) {
    throw new ApiError(0, 'the admin API cannot be reached: ' + e.message);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const msg = (data && data.error_msg) || `${resp.status} ${resp.statusText}`;
    if (resp.status === 401 && key === undefined) unauthorized(msg);
    throw new ApiError(resp.status, msg);
  }
  return data;
}

/** `kind/<id>` with the id escaped for a URL path. */
export function objectPath(kind, id) {
  return `${kind}/${encodeURIComponent(id)}`;
}

/** The values of a list answer (`{list: [{value}]}`). */
export function values(listAnswer) {
  return ((listAnswer && listAnswer.list) || []).map((i) => i.value);
}

// A field path as the admin API writes it: `uri`, `nodes[0].port`, `tls.client_cert_id`.
const PATH = String.raw`[A-Za-z_][\w-]*(?:\[\d+\])*(?:\.[A-Za-z_][\w-]*(?:\[\d+\])*)*`;
const SPLIT = new RegExp(String.raw`;\s(?=${PATH}:\s)`);
const ONE = new RegExp(String.raw`^(${PATH}):\s([\s\S]*)$`);

/**
 * Splits an admin API error message into its problems: `[{path, message}]`, `path` empty
 * for a problem that names no field of the object (the API joins several with "; ").
 */
export function problems(message) {
  return String(message)
    .split(SPLIT)
    .map((part) => {
      const m = ONE.exec(part);
      return m ? { path: m[1], message: m[2] } : { path: '', message: part };
    });
}
