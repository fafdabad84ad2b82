// The JSON APIs, called with the signed-in credentials (kept in this tab's session
// storage only: closing the tab forgets them).
const STORE = "mlgate.dashboard.credentials";
// The API's base path: "" normally, the prefix when a proxy serves mlgate under a path
// (MLGATE_SERVER__ROOT_PATH); the page is at <base>/dashboard.
const BASE = location.pathname.replace(/\/dashboard\/?$/, "");

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

export function savedCredentials() {
  const raw = sessionStorage.getItem(STORE);
  return raw ? JSON.parse(raw) : null;
}

export function forget() {
  sessionStorage.removeItem(STORE);
}

export function keep(credentials) {
  sessionStorage.setItem(STORE, JSON.stringify(credentials));
}

export function keyCredentials(key) {
  return { header: "X-API-Key", value: key.trim() };
}

export async function passwordCredentials(username, password) {
  const body = new URLSearchParams({ username, password });
  const response = await fetch(`${BASE}/v1/token`, { method: "POST", body });
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, json);
  return { header: "Authorization", value: `Bearer ${json.access_token}` };
}

// The caller's rate-limit budget as the last answer reported it (RateLimit-* headers):
// every call, reads included, costs one request of the account's budget per minute.
export const budget = { limit: null, remaining: null };

function noteBudget(response) {
  const limit = Number(response.headers.get("RateLimit-Limit"));
  const remaining = Number(response.headers.get("RateLimit-Remaining"));
  if (limit > 0 && response.headers.has("RateLimit-Remaining")) {
    budget.limit = limit;
    budget.remaining = remaining;
  }
}

export async function getJson(credentials, path, params = {}) {
  const query = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== undefined && v !== null),
  ).toString();
  const response = await fetch(`${BASE}${path}${query ? `?${query}` : ""}`, {
    headers: { [credentials.header]: credentials.value, Accept: "application/json" },
    cache: "no-store",
  });
  noteBudget(response);
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}
