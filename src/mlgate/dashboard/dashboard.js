// The live dashboard: polls the JSON APIs with the signed-in key and redraws.
//
// Polling, not server-sent events: a plain GET every 2 s works through every proxy and
// load balancer, holds no connection open per viewer on a worker, and any replica can
// answer (the audit log and usage counters are in the shared database).
import * as api from "./api.js";
import { drawLines } from "./charts.js";

const FAST_MS = 2000;
const SLOW_MS = 15000;
const SPAN_MS = 5 * 60 * 1000;
const BUCKET_MS = 10000;
const FEED_ROWS = 25;
const PAGE = 1000;

const $ = (id) => document.getElementById(id);
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)} %`);
const percentAxis = (v) => `${Math.round(100 * v)} %`;
const fixed = (digits) => (v) => (Number.isFinite(v) ? v.toFixed(digits) : "–");

const TRAFFIC_PANELS = ["panel-rate", "panel-latency", "panel-errors", "panel-classes", "panel-attacks", "panel-feed"];
const MODEL_PANELS = ["panel-quality", "panel-drift", "panel-models"];

let session = 0; // bumped on sign-in and sign-out: stale loops stop
let credentials = null;
let me = null;
const records = new Map(); // prediction_id -> served record of the last SPAN_MS
let since = null;
const usage = []; // {t, errors, refusals} per second, from the usage totals' deltas
const totalsSeen = []; // the usage totals of the last 10 s or more

// -- sign-in --------------------------------------------------------------------------

function showSignIn(message = "") {
  $("sign-in").hidden = false;
  $("panels").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("status").textContent = "";
  $("sign-in-error").textContent = message;
}

async function signIn(creds) {
  const mine = ++session;
  try {
    me = await api.getJson(creds, "/v1/users/me");
  } catch (error) {
    showSignIn(error.status === 401 ? "This key or password is not valid." : error.message);
    return;
  }
  if (mine !== session) return;
  credentials = creds;
  api.keep(creds);
  records.clear();
  usage.length = 0;
  totalsSeen.length = 0;
  since = new Date(Date.now() - SPAN_MS).toISOString();
  $("sign-in").hidden = true;
  $("panels").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `${me.subject} · ${me.scopes.join(", ")}`;
  // Panels the credentials cannot fill are hidden and their APIs never called.
  const readsTraffic = can("predict");
  const readsModels = can("models:read");
  for (const id of TRAFFIC_PANELS) $(id).hidden = !readsTraffic;
  for (const id of MODEL_PANELS) $(id).hidden = !readsModels;
  // The slow panels follow the models with traffic: the first traffic poll comes first.
  const first = readsTraffic ? loop(mine, pollFast, FAST_MS) : Promise.resolve();
  if (readsModels) first.then(() => loop(mine, pollSlow, SLOW_MS));
}

function signOut(message = "") {
  session += 1;
  credentials = null;
  me = null;
  api.forget();
  showSignIn(message);
}

function can(scope) {
  return me.scopes.includes("admin") || me.scopes.includes(scope);
}

// Requests per minute (of the account's budget) kept free for the caller's own work.
const RESERVE = 6;

function pacedInterval(everyMs, calls) {
  // With a small budget (a free tier's 10 requests a minute), poll no faster than the
  // budget refills, so the dashboard never gets the account refused.
  if (api.budget.limit === null || api.budget.remaining > RESERVE) return everyMs;
  return Math.max(everyMs, Math.ceil((calls * 60000) / api.budget.limit));
}

function loop(mine, poll, everyMs) {
  // Resolves after the first round; then goes on until the session changes.
  return new Promise((firstRound) => {
    rounds(mine, poll, everyMs, firstRound);
  });
}

async function rounds(mine, poll, everyMs, firstRound) {
  while (mine === session) {
    const started = Date.now();
    let calls = 1;
    try {
      calls = await poll();
      const interval = pacedInterval(everyMs, calls);
      const note = interval > everyMs ? ` · slowed to every ${Math.round(interval / 1000)} s (rate limit)` : "";
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}${note}`;
    } catch (error) {
      if (error.status === 401) {
        signOut("The session ended (the key was revoked or the token expired).");
        return;
      }
      $("status").textContent = `update failed: ${error.message}`;
    }
    firstRound();
    const wait = pacedInterval(everyMs, calls) - (Date.now() - started);
    await new Promise((r) => setTimeout(r, Math.max(0, wait)));
  }
}

// -- every 2 s: predictions and usage -------------------------------------------------

async function pollFast() {
  const [pages] = await Promise.all([pollPredictions(), pollUsage()]);
  draw();
  return pages + 1;
}

async function pollPredictions() {
  // Only what is new since the newest record seen ("since" includes it: ids dedupe).
  let cursor;
  let newest = since;
  let pages = 0;
  while (pages < 5) {
    pages += 1;
    const body = await api.getJson(credentials, "/v1/predictions", { since, limit: PAGE, cursor });
    for (const record of body.predictions) {
      records.set(record.prediction_id, record);
      if (record.created_at > newest) newest = record.created_at;
    }
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  since = newest;
  const oldest = Date.now() - SPAN_MS - BUCKET_MS;
  for (const [id, record] of records) if (Date.parse(record.created_at) < oldest) records.delete(id);
  return pages;
}

async function pollUsage() {
  // Today's totals (UTC). Workers add their counts to the database every few seconds,
  // so the rate is taken over the last 10 s or more, not between two polls.
  const today = new Date().toISOString().slice(0, 10);
  const path = can("admin") ? "/v1/admin/usage" : "/v1/usage";
  const body = await api.getJson(credentials, path, { since: today });
  const now = Date.now();
  totalsSeen.push({ ...body.totals, t: now });
  while (totalsSeen.length > 2 && totalsSeen[1].t <= now - BUCKET_MS) totalsSeen.shift();
  const from = totalsSeen[0];
  if (from.t < now - BUCKET_MS / 2 && body.totals.requests >= from.requests) {
    const seconds = (now - from.t) / 1000;
    usage.push({
      t: now,
      requests: (body.totals.requests - from.requests) / seconds,
      errors: (body.totals.errors - from.errors) / seconds,
      refusals: (body.totals.refusals - from.refusals) / seconds,
    });
  }
  while (usage.length && usage[0].t < now - SPAN_MS) usage.shift();
}

// -- drawing --------------------------------------------------------------------------

function buckets(now) {
  // Rows of the last SPAN_MS by 10 s bucket, empty buckets included (the last one is
  // still filling).
  const first = Math.floor((now - SPAN_MS) / BUCKET_MS) * BUCKET_MS;
  const out = new Map();
  for (let t = first; t <= now; t += BUCKET_MS) out.set(t, []);
  for (const record of records.values()) {
    const start = Math.floor(Date.parse(record.created_at) / BUCKET_MS) * BUCKET_MS;
    if (out.has(start)) out.get(start).push(record);
  }
  return [...out.entries()].map(([t, rows]) => ({ t: Math.min(t + BUCKET_MS / 2, now), rows }));
}

function requestsIn(rows) {
  return new Set(rows.map((r) => r.request_id)).size;
}

function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

function outcome(record) {
  if (record.predicted_class_name !== undefined) return `${record.model}: ${record.predicted_class_name}`;
  if (record.is_anomaly === true) return `${record.model}: anomaly`;
  if (record.is_anomaly === false) return `${record.model}: normal`;
  return `${record.model}: calibrating`;
}

function detected(record) {
  return record.is_attack === true || record.is_anomaly === true;
}

function draw() {
  const now = Date.now();
  const opts = { spanMs: SPAN_MS, now };
  const bs = buckets(now);
  const perSecond = BUCKET_MS / 1000;

  drawLines($("chart-rate"), $("legend-rate"), [
    { name: "answered requests/s", points: bs.map((b) => [b.t, requestsIn(b.rows) / perSecond]) },
    { name: "rows/s", points: bs.map((b) => [b.t, b.rows.length / perSecond]) },
    { name: "requests/s (usage)", points: usage.map((u) => [u.t, u.requests]) },
  ], { ...opts, format: fixed(1) });

  const latency = bs.map((b) => ({ t: b.t, sorted: b.rows.map((r) => r.latency_ms).filter(Number.isFinite).sort((x, y) => x - y) }));
  drawLines($("chart-latency"), $("legend-latency"), [0.5, 0.95, 0.99].map((q) => ({
    name: `p${Math.round(q * 100)}`,
    points: latency.map((l) => [l.t, quantile(l.sorted, q)]),
  })), { ...opts, format: fixed(2) });

  drawLines($("chart-errors"), $("legend-errors"), [
    { name: "errors/s", points: usage.map((u) => [u.t, u.errors]) },
    { name: "rate-limit refusals/s", points: usage.map((u) => [u.t, u.refusals]) },
  ], { ...opts, format: fixed(2) });

  const counts = new Map();
  for (const r of records.values()) counts.set(outcome(r), (counts.get(outcome(r)) ?? 0) + 1);
  const classes = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([name]) => name);
  drawLines($("chart-classes"), $("legend-classes"), classes.map((name) => ({
    name, points: bs.map((b) => [b.t, b.rows.filter((r) => outcome(r) === name).length]),
  })), { ...opts, format: fixed(0) });

  const models = [...new Set([...records.values()].map((r) => r.model))].sort().slice(0, 8);
  drawLines($("chart-attacks"), $("legend-attacks"), models.map((model) => ({
    name: model,
    points: bs.map((b) => {
      const rows = b.rows.filter((r) => r.model === model && (r.is_attack != null || r.is_anomaly != null));
      return [b.t, rows.length ? rows.filter(detected).length / rows.length : NaN];
    }),
  })), { ...opts, format: percentAxis, yMax: 1 });

  drawFeed();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function why(record) {
  if (record.is_anomaly !== undefined) {
    return `score ${fixed(3)(record.anomaly_score)} ≥ threshold ${fixed(3)(record.threshold)}`;
  }
  return `confidence ${pct(record.confidence)}${record.cache_hit ? " (cached)" : ""}`;
}

function drawFeed() {
  const rows = [...records.values()].filter(detected)
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1)).slice(0, FEED_ROWS);
  const body = $("feed");
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    cell(tr, "No attack or anomaly in the last 5 minutes.", "muted");
    tr.firstChild.colSpan = 6;
    body.appendChild(tr);
    return;
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.predictionId = r.prediction_id;
    cell(tr, new Date(r.created_at).toLocaleTimeString());
    cell(tr, `${r.model} ${r.model_version}`);
    cell(tr, r.predicted_class_name ?? "anomaly", "bad");
    cell(tr, why(r));
    cell(tr, r.device_id ?? "–");
    cell(tr, r.principal);
    body.appendChild(tr);
  }
}

// -- every 10 s: models, quality, drift -----------------------------------------------

async function pollSlow() {
  // Quality and drift of the models with traffic on screen (all of them before any),
  // and the default model: two calls per model, every 15 s.
  const listing = await api.getJson(credentials, "/v1/models");
  const active = new Set([...records.values()].map((r) => r.model));
  active.add(listing.default_model);
  const names = listing.models.map((m) => m.name).filter((n) => records.size === 0 || active.has(n));
  const [qualities, drifts] = await Promise.all([
    Promise.all(names.map((n) => api.getJson(credentials, `/v1/models/${encodeURIComponent(n)}/quality`, { window: "24h" }).catch(() => null))),
    Promise.all(names.map((n) => api.getJson(credentials, `/v1/models/${encodeURIComponent(n)}/drift`, { window: "24h" }).catch(() => null))),
  ]);
  drawModels(listing.models, qualities);
  drawQuality(qualities.filter(Boolean));
  drawDrift(drifts.filter(Boolean));
  return 1 + 2 * names.length;
}

function drawModels(models, qualities) {
  const body = $("models");
  body.replaceChildren();
  for (const m of models) {
    const tr = document.createElement("tr");
    cell(tr, m.name);
    cell(tr, m.versions.map((v) => (v === m.default_version ? `${v}*` : v)).join(" "));
    cell(tr, Object.entries(m.aliases).map(([a, v]) => `${a}→${v}`).join(", "));
    if (Object.keys(m.load_errors ?? {}).length) tr.className = "bad";
    body.appendChild(tr);
  }
  const shadows = $("shadows");
  shadows.replaceChildren();
  for (const q of qualities.filter(Boolean)) {
    for (const v of q.versions.filter((x) => x.shadow)) {
      const li = document.createElement("li");
      li.textContent = `${q.model} ${v.version} runs in shadow: ${v.predictions} predictions`;
      shadows.appendChild(li);
    }
    for (const c of q.shadow_comparisons ?? []) {
      const li = document.createElement("li");
      li.textContent = `${q.model}: served ${c.served_version} ${pct(c.served.accuracy)} vs shadow ` +
        `${c.shadow_version} ${pct(c.shadow.accuracy)} on ${c.labelled} labelled rows`;
      shadows.appendChild(li);
    }
  }
}

function drawQuality(qualities) {
  const body = $("quality");
  body.replaceChildren();
  for (const q of qualities) {
    for (const v of q.versions.filter((x) => !x.shadow && x.predictions > 0)) {
      const tr = document.createElement("tr");
      cell(tr, q.model);
      cell(tr, v.version);
      cell(tr, String(v.predictions), "num");
      cell(tr, String(v.labelled), "num");
      cell(tr, v.labelled ? `${pct(v.accuracy)}${v.f1 != null ? ` (F1 ${fixed(2)(v.f1)})` : ""}` : "no feedback", "num");
      cell(tr, v.estimated ? pct(v.estimated.accuracy) : "–", "num");
      if (v.estimated && v.estimated.accuracy == null) tr.lastChild.title = v.estimated.note ?? "";
      body.appendChild(tr);
    }
  }
  $("quality-note").textContent = body.children.length ? "" : "No predictions in the last 24 hours.";
}

function drawDrift(drifts) {
  const list = $("drift");
  list.replaceChildren();
  for (const d of drifts) {
    const li = document.createElement("li");
    if (!d.enough_rows) {
      li.className = "muted";
      li.textContent = `${d.model} ${d.version}: ${d.rows} rows (drift needs ${d.thresholds.min_rows})`;
    } else if (d.drifted_features.length) {
      li.className = "bad";
      li.textContent = `${d.model} ${d.version}: drift in ${d.drifted_features.join(", ")}`;
    } else {
      li.className = "ok";
      li.textContent = `${d.model} ${d.version}: no drift (${d.rows} rows)`;
    }
    list.appendChild(li);
  }
}

// -- start ----------------------------------------------------------------------------

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value;
  $("api-key").value = "";
  if (key.trim()) signIn(api.keyCredentials(key));
});
$("password-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const creds = await api.passwordCredentials($("username").value, $("password").value);
    $("password").value = "";
    signIn(creds);
  } catch (error) {
    showSignIn(error.status === 401 ? "Wrong user or password." : error.message);
  }
});
$("sign-out").addEventListener("click", () => signOut());
window.addEventListener("resize", () => credentials && draw());

const saved = api.savedCredentials();
if (saved) signIn(saved);
else showSignIn();
