// optionsfeed dashboard: a live option chain over the gateway's /ws protocol.
// Updates go into a model; the table is painted at most once per animation frame.

const SIDE_FIELDS = ["bid", "ask", "mark", "last", "volume", "open_interest", "iv"];
const GREEK_FIELDS = ["delta", "gamma", "theta", "vega"];
const LABELS = { bid: "Bid", ask: "Ask", mark: "Mark", last: "Last", volume: "Vol",
  open_interest: "OI", iv: "IV", delta: "Δ", gamma: "Γ", theta: "Θ", vega: "V" };
const SHOWN_FLAGS = ["stale", "crossed", "iv_failed", "halted"];
// Only prices flash: a spot tick moves every row's greeks and IV at once, and
// hundreds of simultaneous animations cost more paint than they tell the eye.
const FLASHING = new Set(["bid", "ask", "mark", "last"]);

const $ = (id) => document.getElementById(id);

const state = {
  underlying: "SPY",
  expiry: null,            // "YYYY-MM-DD"
  expiries: [],
  listing: {},             // underlying -> [expiries]
  rows: new Map(),         // symbol -> record
  channels: {},            // channel -> {epoch, seq}
  spot: null, firstSpot: null, stats: null,
  greeks: false, range: 25,
  dirty: new Set(), rebuild: true, scrolled: false,
  // Latency samples (ms) in a fixed ring, and update counts per second: bounded
  // memory and a bounded cost per second, whatever the update rate.
  lat: new Float64Array(4096), latN: 0, updatesThisSecond: 0, rate: 0,
  // Prices of coin-quoted chains (currency "BTC") are small numbers: see coinPrice.
  currency: null,
};

// The longest any one of our handlers ran (ms): tests and curious users read it,
// since the Long Tasks API also counts time the machine gave to other processes.
window.optionsfeedPerf = { workMaxMs: 0, reset() { this.workMaxMs = 0; } };
function timed(fn) {
  return (...args) => {
    const t0 = performance.now();
    try { return fn(...args); } finally {
      const d = performance.now() - t0;
      if (d > window.optionsfeedPerf.workMaxMs) window.optionsfeedPerf.workMaxMs = d;
    }
  };
}

// A read-only view of the model, for tests and debugging from the console.
window.optionsfeedModel = () => ({
  channels: JSON.parse(JSON.stringify(state.channels)),
  rows: [...state.rows.values()],
  expiry: state.expiry,
});

let ws = null;
let nextId = 1;
let lastHeard = 0;
let heartbeatMs = 10000;

// Reconnecting (PROTOCOL.md): after any close but 1008 (policy) and 1009 (our
// message too big), which a retry cannot fix, with capped, jittered backoff; 1000
// and 1001 too (the server is done with that connection, not with us), and 1007
// (the browser sends only valid UTF-8, so it was damaged on the way). After 4008
// and 4029 (slow down) after a backoff of at least PENALTY_FLOOR_MS.
const FINAL_CLOSES = new Set([1008, 1009]);
const PENALTY_CLOSES = new Set([4008, 4029]);
const BACKOFF_MIN_MS = 250, BACKOFF_MAX_MS = 5000, PENALTY_FLOOR_MS = 1000;
let backoff = BACKOFF_MIN_MS;
let openedAt = 0;
// A channel the server stopped serving (an error naming it, or a refused
// subscribe) is subscribed again after a pause for these codes, doubling while it
// keeps failing; for the others (not_entitled, unknown_symbol, ...) it is shown.
const RETRY_CODES = new Set(["internal", "rate_limited"]);
const RETRY_MIN_MS = 1000;
const toRetry = new Set();
const failures = new Map();  // channel -> failures in a row
let retryTimer = 0;
// channel -> id of our latest subscribe of it not yet acknowledged. Its data is
// ignored until then: it belongs to the subscription being replaced, and after the
// ack the server sends the new base (a snapshot, or the updates from our resume
// point, which the channel's state, held still, still equals).
const awaiting = new Map();
let noticeFor = null;  // the channel the notice is about, cleared when it recovers

// ---- formatting -------------------------------------------------------------------

// The IV cell's hover: the volatilities of the bid and the ask (iv_bid, iv_ask).
function ivTitle(r) {
  const pct = (v) => (v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%");
  return r ? `bid IV ${pct(r.iv_bid)} · ask IV ${pct(r.iv_ask)}` : "";
}

// A coin price (Deribit's BTC options) has up to 8 decimals, and a far
// out-of-the-money mark of 0.00000178 BTC is a price, not 0: all 8 are shown,
// trailing zeros trimmed down to 4 so a column still lines up.
function coinPrice(v) {
  return v.toFixed(8).replace(/(\.\d{4}\d*?)0+$/, "$1");
}

// Gamma's scale follows the underlying's price (a BTC gamma is about 1e-5 per USD),
// so it is shown with significant digits, as the wire rounds it, never fixed decimals.
function significant(v, digits) {
  return v === 0 ? "0" : String(Number(v.toPrecision(digits)));
}

function fmt(field, v) {
  if (v === null || v === undefined) return "";
  switch (field) {
    case "iv": return (v * 100).toFixed(1) + "%";
    case "volume": case "open_interest": return v.toLocaleString("en-US");
    case "delta": return v.toFixed(3);
    case "gamma": return significant(v, 4);
    case "theta": case "vega": return v.toFixed(3);
    default: return state.currency ? coinPrice(v) : v.toFixed(2);
  }
}

const compactDate = (iso) => iso.replaceAll("-", "");
// Days to expiry, to the expiry instant: 16:00 New York (about 21:00 UTC) for US
// equity options, 08:00 UTC for coin-quoted (Deribit) ones.
const dte = (iso) => {
  const at = state.currency ? "T08:00:00Z" : "T21:00:00Z";
  return Math.max(0, Math.round((Date.parse(iso + at) - Date.now()) / 86400000));
};

// ---- the wire -----------------------------------------------------------------------

function chainChannel() { return `chain.${state.underlying}.${compactDate(state.expiry)}`; }
function channels() {
  return [chainChannel(), `underlying.${state.underlying}`, `stats.${state.underlying}`];
}

function send(obj) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(obj));
  return true;
}

// Subscribes `list`, each channel held resuming where it is.
function subscribe(list) {
  const msg = { op: "subscribe", id: nextId++, channels: list };
  const resume = {};
  for (const ch of list) {
    const c = state.channels[ch];
    if (c) resume[ch] = { epoch: c.epoch, seq: c.seq };
  }
  if (Object.keys(resume).length) msg.resume = resume;
  if (send(msg)) for (const ch of list) awaiting.set(ch, msg.id);
}

function retryLater(ch) {
  toRetry.add(ch);
  failures.set(ch, (failures.get(ch) || 0) + 1);
  if (retryTimer) return;  // it joins the pause under way: one message for all
  const n = Math.max(...[...toRetry].map((c) => failures.get(c)));
  const delay = Math.min(RETRY_MIN_MS * 2 ** (n - 1), BACKOFF_MAX_MS);
  retryTimer = setTimeout(() => {
    retryTimer = 0;
    const list = [...toRetry].filter(isCurrent);
    toRetry.clear();
    if (list.length) subscribe(list);
  }, delay * (1 + Math.random() / 2));
}

// The server does not serve `ch` (any more): try again later, or say so.
function unserved(ch, err) {
  if (!isCurrent(ch)) return;
  const text = `${ch}: ${err.code}` + (err.message ? ` (${err.message})` : "");
  noticeFor = ch;
  if (RETRY_CODES.has(err.code)) {
    notice(`${text}; subscribing again`);
    retryLater(ch);
  } else {
    delete state.channels[ch];
    notice(`${text}; not served`);
  }
}

function connect() {
  setConn("connecting");
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const token = sessionStorage.getItem("optionsfeed-token");
  const url = `${proto}://${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");
  ws = new WebSocket(url);
  openedAt = 0;
  ws.onopen = () => {
    openedAt = lastData = lastHeard = performance.now();
    setConn("live");
    // Resume where each channel left off: missed updates, or a fresh snapshot.
    subscribe(channels());
  };
  ws.onmessage = timed((ev) => {
    lastHeard = performance.now();
    const data = JSON.parse(ev.data);
    for (const m of Array.isArray(data) ? data : [data]) onMessage(m);
  });
  ws.onclose = (ev) => {
    ws = null;
    // The next connection subscribes every channel: pending retries are moot.
    awaiting.clear();
    toRetry.clear();
    clearTimeout(retryTimer);
    retryTimer = 0;
    if (FINAL_CLOSES.has(ev.code)) {
      setConn("closed");
      notice(`the server closed the connection (${ev.code}${ev.reason ? `: ${ev.reason}` : ""}); reload to try again`);
      return;
    }
    setConn("reconnecting");
    // Only a connection that lived a while resets the backoff: a server that
    // accepts and closes at once is not asked again every 250 ms.
    if (openedAt && performance.now() - openedAt >= BACKOFF_MAX_MS) backoff = BACKOFF_MIN_MS;
    const delay = PENALTY_CLOSES.has(ev.code) ? Math.max(backoff, PENALTY_FLOOR_MS) : backoff;
    setTimeout(connect, delay * (0.5 + Math.random() / 2));
    backoff = Math.min(delay * 2, BACKOFF_MAX_MS);
  };
}

function onMessage(m) {
  switch (m.type) {
    case "welcome": heartbeatMs = m.heartbeat_ms || heartbeatMs; break;
    case "snapshot": applySnapshot(m); break;
    case "update": applyUpdate(m); break;
    case "ack":
      for (const r of m.results) {
        if (awaiting.get(r.channel) === m.id) awaiting.delete(r.channel);
        if (!r.ok) unserved(r.channel, r.error);
      }
      break;
    case "error":
      if (m.id === null && typeof m.channel === "string") {
        unserved(m.channel, m.error);  // no longer subscribed (PROTOCOL.md)
        break;
      }
      // A request the server did not act on: its channels' old subscriptions go on.
      for (const [ch, id] of awaiting) {
        if (id !== m.id) continue;
        awaiting.delete(ch);
        if (RETRY_CODES.has(m.error.code)) retryLater(ch);
      }
      noticeFor = null;
      notice(m.error.message);
      break;
  }
}

function isCurrent(channel) { return channels().includes(channel); }
function isServed(channel) { return isCurrent(channel) && !awaiting.has(channel); }

function served(channel) {
  failures.delete(channel);
  if (noticeFor === channel) { noticeFor = null; notice(""); }
}

function applySnapshot(m) {
  if (!isServed(m.channel)) return;
  served(m.channel);
  state.channels[m.channel] = { epoch: m.epoch, seq: m.seq };
  if (m.channel.startsWith("chain.")) {
    state.rows = new Map(m.data.map((r) => [r.symbol, r]));
    setCurrency(m.data.find((r) => r.currency)?.currency ?? null);
    state.rebuild = true;
    state.headerDirty = true;  // the expiry's forward
  } else {
    for (const r of m.data) mergeSide(m.channel, r);
  }
  schedule();
}

function applyUpdate(m) {
  if (!isServed(m.channel)) return;
  const c = state.channels[m.channel];
  // The sequence rule: anything but prev == our seq (same epoch) is a gap. The
  // state stays as it is, to resume from; what is in flight waits for the ack.
  if (!c || c.epoch !== m.epoch || c.seq !== m.prev) {
    subscribe([m.channel]);
    return;
  }
  served(m.channel);
  c.seq = m.seq;
  lastData = performance.now();
  const now = Date.now() * 1000;
  state.updatesThisSecond += m.data.length;
  for (const r of m.data) {
    state.lat[state.latN++ & 4095] = (now - r.ts) / 1000;
    if (m.channel.startsWith("chain.")) {
      const row = state.rows.get(r.symbol);
      if (!row) continue;
      Object.assign(row, r);  // the model; what changed on screen is found when painting
      state.dirty.add(r.symbol);
      if (r.forward !== undefined) state.headerDirty = true;
    } else {
      mergeSide(m.channel, r);
    }
  }
  schedule();
}

function setCurrency(currency) {
  if (currency !== state.currency) {
    state.currency = currency;
    renderExpiries();  // days to expiry count to another instant
  }
  const el = $("currency");
  el.hidden = !currency;
  el.textContent = currency ? `prices in ${currency}, greeks in USD` : "";
}

function mergeSide(channel, r) {
  if (channel.startsWith("underlying.")) {
    if (r.price !== undefined && r.price !== null) {
      state.spot = r.price;
      if (state.firstSpot === null) state.firstSpot = r.price;
    }
  } else if (channel.startsWith("stats.")) {
    state.stats = Object.assign(state.stats || {}, r);
  }
  state.headerDirty = true;
}

// ---- painting -----------------------------------------------------------------------

let frame = 0;
function schedule() { if (!frame) frame = requestAnimationFrame(timed(paint)); }

function visibleStrikes() {
  const strikes = [...new Set([...state.rows.values()].map((r) => r.strike))].sort((a, b) => a - b);
  if (!strikes.length) return { strikes, atm: null };
  const spot = state.spot ?? strikes[Math.floor(strikes.length / 2)];
  let atm = 0;
  for (let i = 0; i < strikes.length; i++) {
    if (Math.abs(strikes[i] - spot) < Math.abs(strikes[atm] - spot)) atm = i;
  }
  const lo = Math.max(0, atm - state.range), hi = Math.min(strikes.length, atm + state.range + 1);
  return { strikes: strikes.slice(lo, hi), atm: strikes[atm] };
}

function sideFields() { return state.greeks ? [...SIDE_FIELDS, ...GREEK_FIELDS] : SIDE_FIELDS; }

function buildTable() {
  const fields = sideFields();
  const thead = $("chain").tHead, tbody = $("chain").tBodies[0];
  thead.innerHTML = "";
  const h1 = thead.insertRow();
  h1.innerHTML = `<th colspan="${fields.length + 1}" class="side">Calls</th><th></th>` +
    `<th colspan="${fields.length + 1}" class="side">Puts</th>`;
  const h2 = thead.insertRow();
  const calls = [...fields].reverse();
  h2.innerHTML = `<th>flags</th>` + calls.map((f) => `<th>${LABELS[f]}</th>`).join("") +
    `<th class="strike">Strike</th>` + fields.map((f) => `<th>${LABELS[f]}</th>`).join("") + `<th>flags</th>`;
  tbody.innerHTML = "";
  const { strikes, atm } = visibleStrikes();
  const byKey = new Map();
  for (const r of state.rows.values()) byKey.set(`${r.strike}|${r.right}`, r);
  for (const k of strikes) {
    const tr = tbody.insertRow();
    tr.dataset.strike = k;
    if (k === atm) tr.classList.add("atm");
    const c = byKey.get(`${k}|C`), p = byKey.get(`${k}|P`);
    const cell = (r, f, side) =>
      `<td class="${side}" data-s="${r ? r.symbol : ""}" data-f="${f}"` +
      (f === "iv" ? ` title="${ivTitle(r)}"` : "") + `>${r ? fmt(f, r[f]) : ""}</td>`;
    const flags = (r, side) =>
      `<td class="${side} flags" data-s="${r ? r.symbol : ""}" data-f="flags">${r ? flagText(r) : ""}</td>`;
    tr.innerHTML = flags(c, "c") + calls.map((f) => cell(c, f, "c")).join("") +
      `<th class="strike" scope="row">${k.toFixed(2)}</th>` +
      fields.map((f) => cell(p, f, "p")).join("") + flags(p, "p");
  }
  // symbol -> its cells on screen, each remembering the value it shows.
  state.cells = new Map();
  for (const td of tbody.querySelectorAll("td[data-s]")) {
    const sym = td.dataset.s;
    if (!sym) continue;
    if (!state.cells.has(sym)) state.cells.set(sym, []);
    const row = state.rows.get(sym);
    td.shown = td.dataset.f === "flags" ? (row.flags || []).join() : row[td.dataset.f];
    state.cells.get(sym).push(td);
  }
  shadeMoneyness();
  if (!state.scrolled && strikes.length) {
    tbody.querySelector("tr.atm")?.scrollIntoView({ block: "center" });
    state.scrolled = true;
  }
}

function flagText(r) {
  return (r.flags || []).filter((f) => SHOWN_FLAGS.includes(f))
    .map((f) => `<span class="flag flag-${f}" title="${f}">${f.replace("_", " ")}</span>`).join("");
}

function shadeMoneyness() {
  if (state.spot === null) return;
  for (const tr of $("chain").tBodies[0].rows) {
    const k = Number(tr.dataset.strike);
    tr.classList.toggle("itm-call", k < state.spot);
    tr.classList.toggle("itm-put", k > state.spot);
  }
}

function paint() {
  frame = 0;
  if (state.rebuild) {
    state.rebuild = false;
    state.dirty.clear();
    buildTable();
  }
  for (const sym of state.dirty) {
    const tds = state.cells?.get(sym);
    if (!tds) continue;  // not on screen
    const row = state.rows.get(sym);
    for (const td of tds) {
      const field = td.dataset.f;
      if (field === "flags") {
        const key = (row.flags || []).join();
        if (key !== td.shown) { td.shown = key; td.innerHTML = flagText(row); }
        continue;
      }
      if (field === "iv") {
        const title = ivTitle(row);
        if (title !== td.title) td.title = title;
      }
      const v = row[field], was = td.shown;
      if (v === was) continue;
      td.shown = v;
      td.textContent = fmt(field, v);
      if (FLASHING.has(field) && typeof v === "number" && typeof was === "number") {
        // Restart the flash without forcing a layout per cell (reading offsetWidth
        // after a write would): alternate between two identical animations.
        const flip = td.dataset.flip === "1" ? "2" : "1";
        td.dataset.flip = flip;
        td.classList.remove("up1", "up2", "down1", "down2");
        td.classList.add((v > was ? "up" : "down") + flip);
      }
    }
  }
  state.dirty.clear();
  if (state.headerDirty) paintHeader();
}

function paintHeader() {
  state.headerDirty = false;
  paintForward();
  if (state.spot !== null) {
    $("spot").textContent = state.spot.toFixed(2);
    const ch = state.spot - state.firstSpot;
    $("change").textContent = `${ch >= 0 ? "+" : ""}${ch.toFixed(2)}`;
    $("change").className = "change " + (ch >= 0 ? "pos" : "neg");
    shadeMoneyness();
  }
  const s = state.stats;
  if (s) {
    $("atm-iv").textContent = s.atm_iv == null ? "—" : (s.atm_iv * 100).toFixed(1) + "%";
    $("pc-vol").textContent = s.put_call_volume_ratio == null ? "—" : s.put_call_volume_ratio.toFixed(2);
    $("pc-oi").textContent = s.put_call_oi_ratio == null ? "—" : s.put_call_oi_ratio.toFixed(2);
    const mp = s.max_pain && state.expiry ? s.max_pain[state.expiry] : null;
    $("max-pain").textContent = mp == null ? "—" : mp.toFixed(2);
    $("gex").textContent = s.net_gamma_exposure == null ? "—" :
      (s.net_gamma_exposure / 1e6).toFixed(1) + "M";
  }
}

// The selected expiry's forward, as the newest of its rows carries it (its rows
// share it); its source (implied, carry, venue) in the tooltip.
function paintForward() {
  let row = null;
  for (const r of state.rows.values()) {
    if (r.forward != null && (row === null || r.ts > row.ts)) row = r;
  }
  const el = $("forward");
  el.textContent = row === null ? "—" : row.forward.toFixed(2);
  el.title = row === null ? "" : `forward of ${state.expiry} (${row.forward_source})`;
}

// ---- charts (redrawn twice a second: a picture, not a ticker) ----------------------

function drawCharts() {
  const strikes = visibleStrikes().strikes;
  if (!strikes.length) return;
  const byKey = new Map();
  for (const r of state.rows.values()) byKey.set(`${r.strike}|${r.right}`, r);
  const pts = (right, f) => strikes.map((k) => [k, byKey.get(`${k}|${right}`)?.[f] ?? null]);
  // At least 4 vol points tall: a flat smile must look flat, not like rounding noise.
  plot($("smile"), strikes, [[pts("C", "iv"), "#58a6ff"], [pts("P", "iv"), "#f0883e"]], "line",
       (v) => (v * 100).toFixed(1) + "%", 0.04);
  plot($("oi"), strikes, [[pts("C", "open_interest"), "#58a6ff"], [pts("P", "open_interest"), "#f0883e"]],
       "bars", (v) => (v >= 1000 ? (v / 1000).toFixed(0) + "k" : String(v)));
}

function plot(canvas, strikes, series, kind, label, minSpan = 0) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 44, B = 22, T = 8, R = 8;
  ctx.clearRect(0, 0, W, H);
  const vals = series.flatMap(([p]) => p.map(([, v]) => v)).filter((v) => v !== null && isFinite(v));
  if (!vals.length) return;
  let lo = kind === "bars" ? 0 : Math.min(...vals), hi = Math.max(...vals);
  if (hi - lo < minSpan) {
    const mid = (hi + lo) / 2;
    [lo, hi] = [mid - minSpan / 2, mid + minSpan / 2];
  }
  const span = hi - lo || 1;
  const x = (i) => L + ((W - L - R) * (i + 0.5)) / strikes.length;
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / span);
  ctx.strokeStyle = "#262d36"; ctx.fillStyle = "#8b96a3"; ctx.font = "10px system-ui"; ctx.lineWidth = 1;
  for (let g = 0; g <= 4; g++) {
    const v = lo + (span * g) / 4, yy = y(v);
    ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(W - R, yy); ctx.stroke();
    ctx.fillText(label(v), 2, yy + 3);
  }
  const step = Math.max(1, Math.ceil(strikes.length / 6));
  strikes.forEach((k, i) => { if (i % step === 0) ctx.fillText(String(k), x(i) - 10, H - 6); });
  if (state.spot !== null) {
    const i = strikes.findIndex((k) => k >= state.spot);
    if (i >= 0) { ctx.strokeStyle = "#f0c674"; ctx.beginPath(); ctx.moveTo(x(i), T); ctx.lineTo(x(i), H - B); ctx.stroke(); }
  }
  const bw = Math.max(1, (W - L - R) / strikes.length / 2 - 1);
  series.forEach(([p, color], s) => {
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 1.5;
    if (kind === "bars") {
      p.forEach(([, v], i) => { if (v !== null) ctx.fillRect(x(i) - bw + s * bw, y(v), bw, y(0) - y(v)); });
    } else {
      ctx.beginPath();
      let pen = false;
      p.forEach(([, v], i) => {
        if (v === null || !isFinite(v)) { pen = false; return; }
        if (pen) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
        pen = true;
      });
      ctx.stroke();
    }
  });
}

setInterval(timed(drawCharts), 500);

// Latency over the last 4,096 updates and the update rate, once a second.
setInterval(() => {
  state.rate = state.updatesThisSecond;
  state.updatesThisSecond = 0;
  const n = Math.min(state.latN, 4096);
  const v = Array.from(state.lat.subarray(0, n)).sort((a, b) => a - b);
  const q = (p) => v[Math.min(n - 1, Math.floor(p * n))];
  $("latency").textContent = n ? `p50 ${q(0.5).toFixed(1)} · p99 ${q(0.99).toFixed(1)} ms` : "— ms";
  $("rate").textContent = `${state.rate} upd/s`;
  // Dead-connection detection: nothing heard for 3 heartbeats.
  if (ws && ws.readyState === WebSocket.OPEN && performance.now() - lastHeard > 3 * heartbeatMs) {
    ws.close();
  }
}, 1000);

function setConn(s) {
  const el = $("conn");
  el.dataset.state = s;
  el.textContent = s;
}

function notice(text) {
  $("notice").textContent = text;
}

// A feed that goes silent while the connection is live (the source lost its venue,
// the processor stopped, a market closed) is shown, with the gateway's reason from
// /readyz. Only asked while silent, so a healthy page makes no extra requests.
const SILENT_MS = 10000;
const FEED_CHECK_MS = 2000;
let lastData = performance.now();
let reason = "";
async function checkFeed() {
  const el = $("feed");
  const quiet = performance.now() - lastData;
  if (ws && ws.readyState === WebSocket.OPEN && quiet > SILENT_MS) {
    try {
      const res = await fetch("/readyz", { cache: "no-store" });
      // Not ready: its reason; ready: its note (a market closed, a brief reconnect)
      // or, from a gateway, the trouble every gateway shares (its degraded list).
      const body = await res.json();
      reason = (res.ok ? body.note ?? (body.degraded || []).join("; ") : body.reason) ?? "";
    } catch {
      reason = "";
    }
    el.hidden = false;
    el.textContent = `feed silent for ${Math.round(quiet / 1000)} s` + (reason ? `: ${reason}` : "");
    el.title = el.textContent;
  } else {
    el.hidden = true;
  }
  setTimeout(checkFeed, FEED_CHECK_MS);
}

// ---- controls -----------------------------------------------------------------------

function renderExpiries() {
  const nav = $("expiries");
  nav.innerHTML = "";
  for (const e of state.expiries) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = `${e.slice(5)} (${dte(e)}d)`;
    b.setAttribute("aria-pressed", String(e === state.expiry));
    b.dataset.expiry = e;
    b.onclick = () => selectExpiry(e);
    nav.appendChild(b);
  }
}

function selectExpiry(e) {
  if (e === state.expiry) return;
  const old = chainChannel();
  send({ op: "unsubscribe", id: nextId++, channels: [old] });
  delete state.channels[old];
  awaiting.delete(old);
  state.expiry = e;
  state.rows = new Map();
  state.rebuild = true;
  state.scrolled = false;
  renderExpiries();
  subscribe([chainChannel()]);
  schedule();
}

function selectUnderlying(u) {
  const old = channels();
  send({ op: "unsubscribe", id: nextId++, channels: old });
  for (const ch of old) {
    delete state.channels[ch];
    awaiting.delete(ch);
  }
  state.underlying = u;
  state.expiries = state.listing[u] || [];
  state.expiry = state.expiries[0] || null;
  state.rows = new Map();
  state.spot = state.firstSpot = state.stats = null;
  state.rebuild = true;
  state.scrolled = false;
  renderExpiries();
  subscribe(channels());
  schedule();
}

async function start() {
  let res = await fetch("/api/v1/underlyings", { headers: authHeaders() });
  while (res.status === 401) {
    const token = prompt("This feed needs an access token:");
    if (!token) { notice("an access token is required"); return; }
    sessionStorage.setItem("optionsfeed-token", token);
    res = await fetch("/api/v1/underlyings", { headers: authHeaders() });
  }
  const body = await res.json();
  if (!body.underlyings.length) {
    // The gateway is up before the processor published anything: wait for data.
    notice("waiting for data…");
    setTimeout(start, 1000);
    return;
  }
  notice("");
  const select = $("underlying");
  for (const u of body.underlyings) {
    state.listing[u.symbol] = u.expiries;
    select.add(new Option(u.symbol, u.symbol));
  }
  if (!state.listing[state.underlying]) state.underlying = body.underlyings[0]?.symbol;
  select.value = state.underlying;
  select.onchange = () => selectUnderlying(select.value);
  state.expiries = state.listing[state.underlying] || [];
  state.expiry = state.expiries[0] || null;
  renderExpiries();
  $("range").onchange = (e) => { state.range = Math.max(5, Number(e.target.value) || 25); state.rebuild = true; schedule(); };
  $("greeks").onchange = (e) => { state.greeks = e.target.checked; state.rebuild = true; schedule(); };
  connect();
  checkFeed();
}

function authHeaders() {
  const token = sessionStorage.getItem("optionsfeed-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

start();
