// The dashboard page: sign in with a token, then poll /api/snapshot and
// draw it. Every value from the network goes into the page as text, never
// as HTML: function and worker names are chosen by users.
"use strict";

const $ = (id) => document.getElementById(id);
let timer = null;

// A token in the URL fragment (#token=...) signs in directly; it is moved to
// session storage and removed from the address bar at once.
function tokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem("taskworker-token", decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

function token() { return sessionStorage.getItem("taskworker-token"); }

function showLogin(message) {
  clearTimeout(timer);
  $("view").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("updated").textContent = "";
  // Nothing of the last token's view stays in the page.
  for (const id of ["workers", "functions", "tasks"]) $(id).tBodies[0].replaceChildren();
  $("login").hidden = false;
  $("loginerror").textContent = message || "";
}

async function poll() {
  clearTimeout(timer);
  const t = token();
  if (!t) { showLogin(); return; }
  let res;
  try {
    res = await fetch("api/snapshot", { headers: { Authorization: "Bearer " + t }, cache: "no-store" });
  } catch (e) {
    showError("The pool's dashboard does not answer: " + e.message);
    timer = setTimeout(poll, 2000);
    return;
  }
  const body = await res.json().catch(() => ({ error: "an answer that is not JSON (" + res.status + ")" }));
  if (res.status === 401 || res.status === 403) {
    sessionStorage.removeItem("taskworker-token");
    showLogin(body.error);
    return;
  }
  if (!res.ok) {
    showError(body.error || "HTTP " + res.status);
  } else {
    $("error").hidden = true;
    render(body);
  }
  timer = setTimeout(poll, 2000);
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(id, rows, each) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  for (const r of rows) each(body.insertRow(), r);
}

function mib(bytes) { return (bytes / (1 << 20)).toFixed(1) + " MiB"; }

function render(s) {
  $("login").hidden = true;
  $("view").hidden = false;
  $("signout").hidden = false;
  $("who").textContent = s.user + (s.admin ? " (admin)" : "");
  $("updated").textContent = "updated " + new Date(s.time).toLocaleTimeString();
  const workers = s.workers || [], functions = s.functions || [];
  $("nworkers").textContent = workers.length;
  $("nfunctions").textContent = functions.length;
  const maxLoad = Math.max(1, ...workers.map((w) => w.inflight));
  fill("workers", workers, (row, w) => {
    row.dataset.worker = w.id;
    cell(row, w.id);
    cell(row, w.address);
    cell(row, w.zone || "");
    cell(row, w.inflight, "num");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(80 * w.inflight / maxLoad) + "px";
    row.insertCell().append(bar);
    cell(row, w.calls_total, "num");
    cell(row, w.up);
    cell(row, w.last_heartbeat ? w.last_heartbeat + " ago" : "");
    cell(row, w.stores_files ? "yes" : "no");
    cell(row, (w.functions || []).join(", "));
  });
  fill("functions", functions, (row, f) => {
    cell(row, f.name);
    cell(row, f.runtime || "");
    cell(row, (f.workers || []).length, "num");
  });
  fill("tasks", s.tasks || [], (row, t) => {
    cell(row, t.state, t.state === "failed" && t.count > 0 ? "bad" : "");
    cell(row, (t.at_least ? ">= " : "") + t.count, "num");
  });
  const st = s.storage;
  for (const id of ["cardstorage", "cardrepair"]) $(id).hidden = !st;
  if (st) {
    $("stored").textContent = mib(st.bytes_stored);
    $("redundancy").textContent = st.files + " files; versions: " + st.full + " full, " + st.reduced + " reduced, " +
      st.single_copy + " single copy, " + st.lost + " lost";
    $("redundancy").className = "small " + (st.lost > 0 ? "bad" : st.reduced > 0 ? "warn" : "ok");
    $("repairs").textContent = st.repairs_pending;
    $("repairdetail").textContent = "pending; " + st.repairs_done + " done, " + st.repairs_failed + " failed, " +
      st.shards_rebuilt + " shards (" + mib(st.bytes_rebuilt) + ") rebuilt; " + st.shards_damaged + " shards damaged";
  }
  const calls = s.calls || [];
  for (const id of ["cardcalls", "cardlatency", "charts"]) $(id).hidden = calls.length === 0;
  if (calls.length > 0) {
    const last = calls[calls.length - 1];
    $("callrate").textContent = last.per_sec.toFixed(0);
    $("callerr").textContent = last.errors_per_sec > 0 ? last.errors_per_sec.toFixed(1) + " errors/s" : "no errors";
    $("latency").textContent = last.p50_ms.toFixed(1) + " / " + last.p99_ms.toFixed(1) + " ms";
    chart($("chartrate"), [calls.map((c) => c.per_sec)], ["#2463eb"]);
    chart($("chartlatency"), [calls.map((c) => c.p50_ms), calls.map((c) => c.p99_ms)], ["#1f8a4c", "#c77700"]);
  }
}

// chart draws series as polylines scaled to the svg's 400x100 view box.
function chart(svg, series, colors) {
  svg.replaceChildren();
  const max = Math.max(1e-9, ...series.flat());
  series.forEach((values, i) => {
    const step = values.length > 1 ? 400 / (values.length - 1) : 0;
    const pts = values.map((v, j) => (j * step).toFixed(1) + "," + (98 - 96 * v / max).toFixed(1)).join(" ");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts);
    line.setAttribute("stroke", colors[i]);
    svg.append(line);
  });
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("taskworker-token", $("token").value.trim());
  $("token").value = "";
  poll();
});
$("signout").addEventListener("click", () => {
  sessionStorage.removeItem("taskworker-token");
  showLogin();
});
tokenFromFragment();
poll();
