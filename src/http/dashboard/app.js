// The operator's dashboard: asks for the admin token once (or reads it from
// the URL fragment), polls /api/v1/admin/overview every 2 s and draws it.
// Plain DOM and <canvas>, no library; text is set with textContent only, so
// a product's or campaign's name is never read as markup.
"use strict";

(function () {
  const POLL_MS = 2000;
  const OVERVIEW = "api/v1/admin/overview";
  const STORED = "commerce-engine.admin-token";
  const int = new Intl.NumberFormat("en-US");
  const $ = (id) => document.getElementById(id);

  let token = null;
  let fromFragment = false;
  let timer = null;
  let polls = 0;
  let last = null;

  // ---- errors: shown on the page and logged, never swallowed ----
  function reportError(what) {
    const text = what instanceof Error ? what.name + ": " + what.message : String(what);
    const li = document.createElement("li");
    li.textContent = text;
    $("page-errors").appendChild(li);
    $("errors").hidden = false;
    console.error("dashboard:", text);
  }
  window.addEventListener("error", (e) => reportError(e.error || e.message));
  window.addEventListener("unhandledrejection", (e) => reportError(e.reason));

  // ---- the token ----
  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const t = params.get("token");
    return t && t.trim() ? t.trim() : null;
  }

  function storedToken() {
    try {
      return sessionStorage.getItem(STORED);
    } catch (_) {
      return null; // storage refused: ask every time
    }
  }

  function keep(t) {
    try {
      sessionStorage.setItem(STORED, t);
    } catch (_) {
      // kept in memory only
    }
  }

  function forget() {
    try {
      sessionStorage.removeItem(STORED);
    } catch (_) {
      // nothing kept
    }
    token = null;
  }

  function showLogin(message) {
    clearTimeout(timer);
    $("board").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    const m = $("login-message");
    m.hidden = !message;
    m.textContent = message || "";
    setStatus("waiting for the admin token", false);
    $("token").focus();
  }

  function start(t) {
    token = t;
    $("login").hidden = true;
    $("board").hidden = false;
    $("forget").hidden = fromFragment;
    clearTimeout(timer);
    poll();
  }

  // ---- polling ----
  function setStatus(text, bad) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("bad", !!bad);
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    if (!token) return;
    let res;
    try {
      res = await fetch(OVERVIEW, {
        headers: { Authorization: "Bearer " + token },
        cache: "no-store",
      });
    } catch (_) {
      setStatus("cannot reach the server; retrying", true);
      schedule();
      return;
    }
    if (res.status === 401) {
      const wasFragment = fromFragment;
      forget();
      fromFragment = false;
      showLogin(wasFragment ? "The token in the URL was refused." : "The token was refused.");
      return;
    }
    if (!res.ok) {
      setStatus("the server answered " + res.status + "; retrying", true);
      schedule();
      return;
    }
    try {
      last = await res.json();
      render(last);
      polls += 1;
      document.body.dataset.polls = String(polls);
      setStatus("updated " + new Date().toLocaleTimeString("en-GB") + " · every 2 s", false);
    } catch (e) {
      reportError(e);
    }
    schedule();
  }

  // ---- drawing ----
  function fmtRate(x) {
    if (x === null || x === undefined) return "–";
    if (x >= 100) return int.format(Math.round(x));
    return x.toFixed(1);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function fill(tbody, rows, empty, columns) {
    tbody.replaceChildren();
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = cell(tr, empty, "empty");
      td.colSpan = columns;
      tbody.appendChild(tr);
      return;
    }
    for (const r of rows) tbody.appendChild(r);
  }

  function render(d) {
    const o = d.orders;
    const now = d.throughput.now;
    const known = now.secs > 0;
    $("now-paid").textContent = known ? fmtRate(now.orders_paid_per_sec) : "–";
    $("now-requests").textContent = known ? fmtRate(now.requests_per_sec) : "–";
    $("orders-paid").textContent = int.format(o.paid);
    $("paid-krw").textContent = int.format(d.paid_krw);
    $("orders-pending").textContent = int.format(o.pending);
    $("dp-pending").textContent = int.format(d.data_platform.pending);
    $("dp-pending").classList.toggle("warn", d.data_platform.pending > 1000);

    renderReadiness(d.readiness);
    renderCharts(d.throughput);
    renderOrders(o);
    renderTop(d.top_products);
    renderLow(d.low_stock);
    renderCampaigns(d.campaigns);
    renderHealth(d);
  }

  function renderReadiness(r) {
    const b = $("readiness");
    b.textContent = r.status;
    b.className = "badge " + (r.status === "ready" ? "good" : "bad");
    const p = $("readiness-detail");
    p.hidden = !r.detail;
    p.textContent = r.detail || "";
  }

  function renderOrders(o) {
    const rows = [
      ["placed", o.placed],
      ["pending", o.pending],
      ["paid", o.paid],
      ["failed", o.failed],
      ["cancelled", o.cancelled],
      ["expired", o.expired],
    ].map(([status, n]) => {
      const tr = document.createElement("tr");
      tr.dataset.status = status;
      cell(tr, status);
      cell(tr, int.format(n), "num count");
      return tr;
    });
    fill($("orders").tBodies[0], rows, "", 2);
  }

  function renderTop(top) {
    $("top-window").textContent = "last " + top.window_days + " days";
    const rows = top.items.map((item) => {
      const tr = document.createElement("tr");
      tr.dataset.productId = String(item.product_id);
      cell(tr, String(item.rank));
      cell(tr, item.name, "name").title = item.name;
      cell(tr, int.format(item.sold_quantity), "num sold");
      return tr;
    });
    fill($("top-products").tBodies[0], rows, "no sales yet", 3);
  }

  function renderLow(low) {
    $("low-note").textContent =
      low.scanned < low.products
        ? "first " + int.format(low.scanned) + " of " + int.format(low.products)
        : int.format(low.products) + " products";
    const rows = low.items.map((p) => {
      const tr = document.createElement("tr");
      tr.dataset.productId = String(p.id);
      cell(tr, p.name, "name").title = p.name;
      cell(tr, int.format(p.stock), "num stock" + (p.stock === 0 ? " bad" : ""));
      return tr;
    });
    fill($("low-stock").tBodies[0], rows, "no products", 2);
  }

  function renderCampaigns(c) {
    $("campaigns-note").textContent =
      c.items.length < c.campaigns
        ? "newest " + c.items.length + " of " + int.format(c.campaigns)
        : "";
    const rows = c.items.map((k) => {
      const tr = document.createElement("tr");
      tr.dataset.couponId = String(k.id);
      cell(tr, k.name, "name").title = k.name;
      cell(tr, int.format(k.remaining) + " / " + int.format(k.quantity), "num remaining");
      const meter = document.createElement("div");
      meter.className = "meter";
      const bar = document.createElement("span");
      bar.style.width = (k.quantity > 0 ? (100 * k.remaining) / k.quantity : 0) + "%";
      meter.appendChild(bar);
      cell(tr, "", "bar").appendChild(meter);
      return tr;
    });
    fill($("campaigns").tBodies[0], rows, "no campaigns", 3);
  }

  function renderHealth(d) {
    const j = d.journal;
    const s = d.snapshots;
    const flush = d.throughput.now.journal_flush_ms;
    const rows = [
      ["journal records", int.format(j.records_total)],
      ["batches (flushes)", int.format(j.batches_total)],
      ["flush, last 5 s", flush === null ? "idle" : flush.toFixed(2) + " ms"],
      ["last flush", (j.last_flush_us / 1000).toFixed(2) + " ms"],
      ["last batch size", int.format(j.last_batch_records)],
      ["queued", int.format(j.queued)],
      ["snapshots", int.format(s.written_total)],
      ["snapshot failures", int.format(s.failures_total)],
    ].map(([k, v]) => {
      const tr = document.createElement("tr");
      cell(tr, k);
      cell(tr, v, "num");
      return tr;
    });
    fill($("health").tBodies[0], rows, "", 2);
    const f = $("snapshots-failing");
    f.hidden = !s.failing;
    f.textContent = s.failing
      ? "The last " + s.failing.consecutive + " snapshots failed: " + s.failing.error
      : "";
  }

  function renderCharts(t) {
    // Seconds the history covers (its oldest point may cover less than a step).
    const span = spanText(t.history.reduce((sum, p) => sum + p.secs, 0));
    for (const el of document.querySelectorAll("[data-span]")) el.textContent = "· last " + span;
    chart($("chart-paid"), t.history.map((p) => p.orders_paid_per_sec), "--paid", fmtRate, span);
    chart($("chart-requests"), t.history.map((p) => p.requests_per_sec), "--requests", fmtRate, span);
    chart($("chart-flush"), t.history.map((p) => p.journal_flush_ms), "--flush", (x) => (x >= 1 ? x.toFixed(1) : x.toFixed(3)), span);
  }

  // A line chart of `values` (null: no value) scaled to their maximum,
  // `span` ago at its left edge. The canvas says how many points it drew
  // (data-points), for whoever checks the page.
  function chart(canvas, values, colorVar, fmt, span) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const color = css.getPropertyValue(colorVar).trim() || "#333";
    const muted = css.getPropertyValue("--muted").trim() || "#666";
    const line = css.getPropertyValue("--line").trim() || "#ddd";
    const left = 44, right = 6, top = 6, bottom = 16;
    const pw = w - left - right, ph = h - top - bottom;
    const known = values.filter((v) => v !== null && v !== undefined);
    canvas.dataset.points = String(known.length);
    const max = Math.max(1e-9, ...known);
    const top_ = niceCeil(max);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = muted;
    g.strokeStyle = line;
    g.lineWidth = 1;
    for (let i = 0; i <= 2; i++) {
      const y = top + ph - (ph * i) / 2;
      g.beginPath();
      g.moveTo(left, Math.round(y) + 0.5);
      g.lineTo(left + pw, Math.round(y) + 0.5);
      g.stroke();
      g.textAlign = "right";
      g.textBaseline = "middle";
      g.fillText(known.length ? fmt((top_ * i) / 2) : "", left - 4, y);
    }
    g.textAlign = "left";
    g.textBaseline = "top";
    g.fillText(values.length ? "−" + span : "", left, top + ph + 3);
    g.textAlign = "right";
    g.fillText("now", left + pw, top + ph + 3);
    if (known.length === 0) {
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.fillText("collecting…", left + pw / 2, top + ph / 2);
      return;
    }
    // Runs of known values become lines; a lone value, a dot.
    const n = values.length;
    const runs = [];
    let run = [];
    values.forEach((v, i) => {
      if (v === null || v === undefined) {
        if (run.length) runs.push(run);
        run = [];
        return;
      }
      const x = left + (n === 1 ? pw : (pw * i) / (n - 1));
      run.push([x, top + ph - (ph * v) / top_]);
    });
    if (run.length) runs.push(run);
    g.strokeStyle = color;
    g.fillStyle = color;
    g.lineWidth = 1.6;
    for (const r of runs) {
      g.beginPath();
      if (r.length === 1) {
        g.arc(r[0][0], r[0][1], 2.5, 0, 2 * Math.PI);
        g.fill();
        continue;
      }
      r.forEach(([x, y], i) => (i === 0 ? g.moveTo(x, y) : g.lineTo(x, y)));
      g.stroke();
    }
  }

  function spanText(secs) {
    return secs >= 60 ? Math.round(secs / 60) + " min" : Math.round(secs) + " s";
  }

  function niceCeil(x) {
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 2.5, 5, 10]) if (x <= m * p) return m * p;
    return 10 * p;
  }

  // ---- start ----
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const t = $("token").value.trim();
      if (!t) return;
      $("token").value = "";
      fromFragment = false;
      keep(t);
      start(t);
    });
    $("forget").addEventListener("click", () => {
      forget();
      showLogin("");
    });
    window.addEventListener("resize", () => {
      if (last && !$("board").hidden) renderCharts(last.throughput);
    });
    const t = tokenFromFragment();
    if (t) {
      fromFragment = true;
      start(t);
      return;
    }
    const kept = storedToken();
    if (kept) start(kept);
    else showLogin("");
  });
})();
