// moodwire live page: polls the JSON endpoints and draws everything with inline SVG
// (no libraries, no CDN: the page must work offline).
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#3e63dd", "#e54666", "#12a594", "#f76b15", "#8e4ec6", "#0090ff",
    "#ad7f58", "#d6409f", "#46a758", "#5b5bd6", "#978365", "#ffb224"];
  const NEG = "#e5484d", NEU = "#b0b4ba", POS = "#30a46c";
  const NO_BRAND = "(none)";
  const state = { refreshMs: 3000, colors: {}, brandFilter: "", names: {}, hidden: new Set() };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  const fmtInt = (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US"));
  const pct = (x) => (x === null || x === undefined || isNaN(x) ? "–" : `${Math.round(x * 100)}%`);
  const signed = (x) => (x === null || x === undefined ? "–" : (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(2));
  const pad = (n) => String(n).padStart(2, "0");
  const hhmm = (epoch) => {
    const d = new Date(epoch * 1000);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  };
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const dayOf = (epoch) => {
    const d = new Date(epoch * 1000);
    return `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}`;
  };
  const epochOf = (iso) => Date.parse(iso) / 1000;
  const display = (brand) => state.names[brand] || (brand === NO_BRAND ? "No brand" : brand);

  function colorOf(brand) {
    if (!(brand in state.colors)) {
      state.colors[brand] = PALETTE[Object.keys(state.colors).length % PALETTE.length];
    }
    return state.colors[brand];
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    // The session ended (token changed, cookie expired): back to the login page.
    if (response.status === 401) window.location.assign("/login");
    let body = {};
    try { body = await response.json(); } catch (_) { /* an empty or HTML error body */ }
    if (!response.ok) throw new Error(body.error || body.detail || `HTTP ${response.status}`);
    return body;
  }

  // --- charts ---------------------------------------------------------------------------

  // Round axis ticks: 0 to a multiple of 1, 2, 2.5 or 5 x 10^k covering ``value``.
  function niceTicks(value) {
    const rough = Math.max(value, 1) / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(rough)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= rough);
    const ticks = [];
    for (let t = 0; t < value + step; t += step) ticks.push(t);
    if (ticks.length < 2) ticks.push(step);
    return ticks;
  }

  // lines: [{name, color, values: [number|null], dashed?}]
  function lineChart(container, minutes, lines, opts) {
    const width = Math.max(container.clientWidth || 0, 320);
    const height = opts.height || 220;
    const m = { left: 44, right: 14, top: 10, bottom: 24 };
    const innerW = width - m.left - m.right, innerH = height - m.top - m.bottom;
    const n = minutes.length;
    const x = (i) => m.left + (n <= 1 ? innerW / 2 : (i * innerW) / (n - 1));
    const y = (v) => m.top + innerH - ((v - opts.yMin) / (opts.yMax - opts.yMin)) * innerH;
    const root = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });

    const axis = svgEl("g", { class: "axis" });
    for (const tick of opts.yTicks) {
      axis.appendChild(svgEl("line", { x1: m.left, x2: width - m.right, y1: y(tick), y2: y(tick),
        class: tick === 0 && opts.yMin < 0 ? "zero" : "" }));
      const label = svgEl("text", { x: m.left - 8, y: y(tick) + 4, "text-anchor": "end" });
      label.textContent = opts.yFormat(tick);
      axis.appendChild(label);
    }
    const every = Math.max(1, Math.ceil(n / 8));
    for (let i = 0; i < n; i++) {
      if ((n - 1 - i) % every !== 0) continue;
      const label = svgEl("text", { x: x(i), y: height - 6, "text-anchor": "middle" });
      label.textContent = hhmm(minutes[i]);
      axis.appendChild(label);
    }
    root.appendChild(axis);

    const step = n <= 1 ? innerW : innerW / (n - 1);
    for (const band of opts.bands || []) {
      const i0 = minutes.indexOf(band.start);
      if (i0 < 0) continue;
      const span = Math.max(1, Math.round((band.end - band.start) / 60));
      const x0 = Math.max(m.left, x(i0) - step / 2);
      const x1 = Math.min(width - m.right, x(i0) + (span - 0.5) * step);
      root.appendChild(svgEl("rect", { x: x0, y: m.top, width: x1 - x0, height: innerH,
        fill: "rgba(229,72,77,0.10)", class: "alert-band" }));
      root.appendChild(svgEl("line", { x1: x0, x2: x0, y1: m.top, y2: m.top + innerH,
        stroke: "rgba(229,72,77,0.45)", "stroke-dasharray": "2 3" }));
      const label = svgEl("text", { x: x1 - 3, y: m.top + 11, "text-anchor": "end", class: "band-label" });
      label.textContent = band.label;
      root.appendChild(label);
    }

    for (const line of lines) {
      let d = "", open = false;
      line.values.forEach((v, i) => {
        if (v === null || v === undefined) { open = false; return; }
        d += `${open ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        open = true;
      });
      if (!d) continue;
      root.appendChild(svgEl("path", { d, fill: "none", stroke: line.color,
        "stroke-width": line.dashed ? 1.5 : 1.8, "stroke-dasharray": line.dashed ? "5 4" : "",
        "stroke-opacity": line.dashed ? 1 : 0.9,
        "stroke-linejoin": "round", "stroke-linecap": "round", "data-series": line.name }));
    }

    // Hover: a crosshair and a tooltip with every series at that minute.
    const cross = svgEl("line", { class: "crosshair", y1: m.top, y2: m.top + innerH, visibility: "hidden" });
    root.appendChild(cross);
    const overlay = svgEl("rect", { x: m.left, y: m.top, width: innerW, height: innerH, fill: "transparent" });
    root.appendChild(overlay);
    const tip = $("tooltip");
    overlay.addEventListener("mousemove", (event) => {
      const box = root.getBoundingClientRect();
      const px = ((event.clientX - box.left) / box.width) * width;
      const i = Math.min(n - 1, Math.max(0, Math.round(((px - m.left) / innerW) * (n - 1))));
      cross.setAttribute("x1", x(i)); cross.setAttribute("x2", x(i));
      cross.setAttribute("visibility", "visible");
      tip.replaceChildren(el("div", { class: "t" }, `${dayOf(minutes[i])} ${hhmm(minutes[i])} UTC`));
      const rows = lines.map((l) => [l, l.values[i]]).filter(([, v]) => v !== null && v !== undefined);
      rows.sort((a, b) => b[1] - a[1]);
      for (const [line, v] of rows) {
        const row = el("div", { class: "row" });
        const name = el("span");
        const swatch = el("i"); swatch.style.background = line.color;
        name.append(swatch, display(line.name));
        row.append(name, el("b", {}, opts.yFormat(v)));
        tip.appendChild(row);
      }
      tip.hidden = false;
      tip.style.left = `${Math.min(event.clientX + 14, window.innerWidth - 200)}px`;
      tip.style.top = `${event.clientY + 14}px`;
    });
    overlay.addEventListener("mouseleave", () => {
      cross.setAttribute("visibility", "hidden");
      tip.hidden = true;
    });
    container.replaceChildren(root);
  }

  // Per-minute stacked bars (negative at the bottom), alert windows shaded.
  function stackedBars(container, minutes, s, windows) {
    const width = 300, height = 64, top = 4, bottom = 14;
    const n = minutes.length, innerH = height - top - bottom;
    const max = Math.max(1, ...s.n);
    const step = width / Math.max(n, 1);
    const root = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", height });
    for (const [start, end] of windows) {
      const i0 = minutes.indexOf(start);
      if (i0 < 0) continue;
      const span = Math.max(1, Math.round((end - start) / 60));
      root.appendChild(svgEl("rect", { x: i0 * step, y: 0, width: span * step,
        height: height - bottom + 2, fill: "rgba(229,72,77,0.12)" }));
    }
    for (let i = 0; i < n; i++) {
      let base = top + innerH;
      for (const [count, color] of [[s.neg[i], NEG], [s.neu[i], NEU], [s.pos[i], POS]]) {
        if (!count) continue;
        const h = (count / max) * innerH;
        root.appendChild(svgEl("rect", { x: i * step + step * 0.12, y: base - h,
          width: step * 0.76, height: h, fill: color }));
        base -= h;
      }
    }
    const axis = svgEl("g", { class: "axis" });
    for (const i of [0, Math.floor((n - 1) / 2), n - 1]) {
      if (i < 0 || i >= n) continue;
      const label = svgEl("text", { x: Math.min(Math.max(i * step + step / 2, 14), width - 14),
        y: height - 2, "text-anchor": "middle" });
      label.textContent = hhmm(minutes[i]);
      axis.appendChild(label);
    }
    root.appendChild(axis);
    root.style.width = "100%";
    container.replaceChildren(root);
  }

  // --- sections -------------------------------------------------------------------------

  function renderKpis(status, series, alerts) {
    $("kpi-rate").textContent = status.posts_per_second === null || status.posts_per_second === undefined
      ? "–" : fmtInt(status.posts_per_second);
    $("kpi-scored").textContent = fmtInt(status.scored);
    $("kpi-scored-sub").textContent = status.posts === null || status.posts === undefined
      ? "in Postgres" : `${fmtInt(status.posts)} posts stored`;
    $("kpi-dead").textContent = fmtInt(status.dead_letters);
    $("kpi-alerts").textContent = alerts ? fmtInt(alerts.length) : "–";
    $("kpi-alerts").parentElement.classList.toggle("hot", !!(alerts && alerts.length));
    if (series && series.all && series.all.n.length) {
      const all = series.all;
      const full = all.n.length >= 2 ? all.n[all.n.length - 2] : all.n[0];
      $("kpi-ppm").textContent = fmtInt(full);
      const posts = all.n.reduce((a, b) => a + b, 0), neg = all.neg.reduce((a, b) => a + b, 0);
      $("kpi-neg").textContent = posts ? pct(neg / posts) : "–";
      $("kpi-neg").nextElementSibling.textContent = "all posts, last hour";
    }
  }

  // The minutes from the first that has posts (at least MIN_POINTS): a feed that started
  // a few minutes ago fills the chart instead of hugging its right edge.
  const MIN_POINTS = 15;
  // The minute still filling (the clock's) is left out: it would read as a sudden drop.
  function trimmed(series) {
    const first = series.all.n.findIndex((n) => n > 0);
    const from = Math.max(0, Math.min(first < 0 ? 0 : first, series.minutes.length - MIN_POINTS));
    const open = series.watermark >= Math.floor(Date.now() / 60000) * 60 && series.minutes.length > 1;
    const to = series.minutes.length - (open ? 1 : 0);
    if (from === 0 && !open) return series;
    const cut = (s) => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Array.isArray(v) ? v.slice(from, to) : v]));
    const brands = Object.fromEntries(Object.entries(series.brands).map(([b, s]) => [b, cut(s)]));
    return { ...series, minutes: series.minutes.slice(from, to), all: cut(series.all), brands };
  }

  function renderCharts(full, alerts) {
    const series = trimmed(full);
    const brands = Object.keys(series.brands).filter((b) => b !== NO_BRAND);
    brands.forEach(colorOf);
    const shown = (line) => !state.hidden.has(line.name);
    const legend = $("legend");
    legend.replaceChildren();
    const toggle = (name) => () => {
      if (state.hidden.has(name)) state.hidden.delete(name); else state.hidden.add(name);
      renderCharts(full, alerts);
    };
    for (const b of brands) {
      const item = el("span", { class: state.hidden.has(b) ? "off" : "", title: "show / hide" });
      const swatch = el("i");
      swatch.style.background = colorOf(b);
      item.append(swatch, display(b));
      item.addEventListener("click", toggle(b));
      legend.appendChild(item);
    }
    const allItem = el("span", { class: state.hidden.has("*") ? "off" : "", title: "show / hide" });
    const allSwatch = el("i");
    allSwatch.style.background = "repeating-linear-gradient(90deg,#60646c 0 5px,transparent 5px 8px)";
    allItem.append(allSwatch, "All posts");
    allItem.addEventListener("click", toggle("*"));
    legend.appendChild(allItem);
    // Alert windows of the shown brands, shaded behind the lines (one band per window).
    const byWindow = new Map();
    for (const a of alerts || []) {
      if (state.hidden.has(a.brand)) continue;
      const key = `${a.window_start}|${a.window_end}`;
      if (!byWindow.has(key)) byWindow.set(key, { start: epochOf(a.window_start), end: epochOf(a.window_end), names: [] });
      byWindow.get(key).names.push(a.display || display(a.brand));
    }
    const bands = Array.from(byWindow.values()).map((b) => ({
      ...b, label: `${b.names.sort().join(", ")} spike`,
    }));

    const scoreLines = brands.map((b) => ({ name: b, color: colorOf(b), values: series.brands[b].mean_score }));
    scoreLines.push({ name: "*", color: "#60646c", values: series.all.mean_score, dashed: true });
    lineChart($("chart-sentiment"), series.minutes, scoreLines.filter(shown), {
      yMin: -1, yMax: 1, yTicks: [-1, -0.5, 0, 0.5, 1], yFormat: (v) => signed(v), height: 230,
      bands,
    });
    const volumeLines = brands.map((b) => ({ name: b, color: colorOf(b), values: series.brands[b].n }));
    const ticks = niceTicks(Math.max(1, ...volumeLines.filter(shown).flatMap((l) => l.values)));
    lineChart($("chart-volume"), series.minutes, volumeLines.filter(shown), {
      yMin: 0, yMax: ticks[ticks.length - 1], yTicks: ticks, yFormat: (v) => fmtInt(v),
      height: 190, bands,
    });
  }

  function renderCards(status, series, alerts) {
    const totals = status.brands || {};
    const names = Object.keys(totals).sort((a, b) => {
      if ((a === NO_BRAND) !== (b === NO_BRAND)) return a === NO_BRAND ? 1 : -1;
      return totals[b].posts - totals[a].posts || a.localeCompare(b);
    });
    const cards = $("cards");
    cards.replaceChildren();
    const axis = (series && series.minutes) || [];
    for (const brand of names) {
      const t = totals[brand];
      const mine = (alerts || []).filter((a) => a.brand === brand);
      const windows = mine.map((a) => [epochOf(a.window_start), epochOf(a.window_end)]);
      const shown = mine.filter((a) => axis.includes(epochOf(a.window_start)));
      const alerting = shown.length > 0;
      // A negative shift says more than a volume surge: it names the badge when both are up.
      const badge = shown.some((a) => a.kind !== "volume_surge") ? "negative shift" : "volume surge";
      const card = el("div", { class: "card" + (alerting ? " alerting" : ""), "data-brand": brand });
      card.style.setProperty("--c", brand === NO_BRAND ? NEU : colorOf(brand));
      const head = el("div", { class: "card-head" });
      head.appendChild(el("span", { class: "card-name" }, display(brand)));
      if (alerting) head.appendChild(el("span", { class: "card-badge" }, badge));
      card.appendChild(head);

      const stats = el("div", { class: "card-stats" });
      const posts = el("span"); posts.append(el("b", {}, fmtInt(t.posts)), " posts");
      const score = el("span"); score.append("mean score ", el("b", {}, signed(t.mean_score)));
      stats.append(posts, score);
      card.appendChild(stats);
      // Posts in a language the model does not read: stored and counted, never scored.
      const unread = (status.unscored_for_language || {})[brand];
      if (unread && Object.keys(unread).length) {
        const total = Object.values(unread).reduce((a, b) => a + b, 0);
        const langs = Object.entries(unread).slice(0, 4).map(([l, n]) => `${l} ${fmtInt(n)}`).join(", ");
        card.appendChild(el("div", {
          class: "card-unscored",
          title: "posts in a language the model does not read: stored and counted, not scored",
        }, `${fmtInt(total)} not scored for language (${langs})`));
      }

      const mix = el("div", { class: "mix", title: "negative / neutral / positive" });
      for (const [count, color] of [[t.negative, NEG], [t.neutral, NEU], [t.positive, POS]]) {
        const part = el("div");
        part.style.width = `${t.posts ? (100 * count) / t.posts : 0}%`;
        part.style.background = color;
        mix.appendChild(part);
      }
      card.appendChild(mix);
      const labels = el("div", { class: "mix-labels" });
      labels.append(
        el("span", { class: "n" }, `${pct(t.posts ? t.negative / t.posts : null)} negative`),
        el("span", {}, `${pct(t.posts ? t.neutral / t.posts : null)} neutral`),
        el("span", { class: "p" }, `${pct(t.posts ? t.positive / t.posts : null)} positive`),
      );
      card.appendChild(labels);

      const chart = el("div", { class: "chart" });
      card.appendChild(chart);
      cards.appendChild(card);
      const s = series && series.brands && series.brands[brand];
      if (s) stackedBars(chart, axis, s, windows);
    }
  }

  function windowText(alert) {
    const start = epochOf(alert.window_start), end = epochOf(alert.window_end);
    return `${dayOf(start)} ${hhmm(start)}–${hhmm(end)}`;
  }

  // One tag per channel: sent, waiting (quiet hours, retrying), failed (with the error).
  function deliveryCell(deliveries) {
    const cell = el("td", { class: "delivery" });
    if (!deliveries.length) cell.textContent = "–";
    for (const d of deliveries) {
      const failing = d.status === "failed" || (d.status === "pending" && d.last_error);
      const tag = el("span", { class: "tag delivery-" + (failing ? "failing" : d.status), "data-channel": d.channel,
                                 title: d.last_error || d.reason || d.status }, `${d.channel}: ${d.status}`);
      cell.appendChild(tag);
    }
    return cell;
  }

  function renderAlerts(alerts) {
    const box = $("alerts");
    if (!alerts.length) {
      box.replaceChildren(el("div", { class: "none" }, "No alerts so far."));
      return;
    }
    const table = el("table", { class: "alerts" });
    const head = el("tr");
    for (const h of ["Brand", "Window (UTC)", "Negative", "Baseline", "Posts", "z", "State", "Delivery"]) head.appendChild(el("th", {}, h));
    table.appendChild(el("thead")).appendChild(head);
    const body = el("tbody");
    for (const a of alerts) {
      const acked = !!a.acked_at;
      const row = el("tr", { "data-alert-brand": a.brand, "data-alert-state": acked ? "acked" : "open", class: acked ? "acked" : "" });
      row.append(
        el("td", { class: "brand" }, a.display || display(a.brand)),
        el("td", {}, windowText(a)),
        el("td", { class: "share" }, pct(a.negative_share)),
        el("td", {}, pct(a.baseline_share)),
        el("td", {}, fmtInt(a.posts)),
        el("td", {}, a.details && a.details.z !== undefined ? Number(a.details.z).toFixed(1) : "–"),
        el("td", { class: "state" }, acked ? `acked${a.acked_by ? " by " + a.acked_by : ""}` : "open"),
        deliveryCell(a.deliveries || []),
      );
      body.appendChild(row);
    }
    table.appendChild(body);
    box.replaceChildren(table);
  }

  function renderPosts(posts) {
    const list = $("posts");
    list.replaceChildren();
    if (!posts.length) {
      list.appendChild(el("li", { class: "none" }, "No negative posts yet."));
      return;
    }
    for (const p of posts) {
      const item = el("li");
      item.appendChild(el("div", { class: "text" }, p.text));
      const meta = el("div", { class: "meta-line" });
      for (const b of p.brands) meta.appendChild(el("span", { class: "tag" }, display(b)));
      meta.appendChild(el("span", {}, p.source));
      if (p.author) meta.appendChild(el("span", {}, `@${p.author}`));
      const t = epochOf(p.created_at);
      meta.appendChild(el("span", {}, `${dayOf(t)} ${hhmm(t)} UTC`));
      meta.appendChild(el("span", { class: "score" }, `score ${signed(p.score)}`));
      item.appendChild(meta);
      list.appendChild(item);
    }
  }

  function renderFilter(status) {
    const select = $("brand-filter");
    const wanted = Object.keys(status.brands || {}).filter((b) => b !== NO_BRAND).sort();
    const have = Array.from(select.options).slice(1).map((o) => o.value);
    if (wanted.join("\u0000") === have.join("\u0000")) return;
    select.replaceChildren(el("option", { value: "" }, "all brands"));
    for (const b of wanted) select.appendChild(el("option", { value: b }, display(b)));
    select.value = state.brandFilter;
  }

  // --- the loop ---------------------------------------------------------------------------

  async function refresh() {
    const filter = state.brandFilter ? `&brand=${encodeURIComponent(state.brandFilter)}` : "";
    const [status, series, alerts, posts] = await Promise.allSettled([
      getJSON("/api/status"),
      getJSON("/api/series?minutes=60"),
      getJSON("/api/alerts?limit=12"),
      getJSON(`/api/posts?sentiment=negative&limit=25${filter}`),
    ]);
    const errors = [];
    for (const [what, r] of [["status", status], ["series", series], ["alerts", alerts], ["posts", posts]]) {
      if (r.status === "rejected") errors.push(`${what}: ${r.reason.message}`);
    }
    const st = status.status === "fulfilled" ? status.value : null;
    const se = series.status === "fulfilled" ? series.value : null;
    const al = alerts.status === "fulfilled" ? alerts.value.alerts : null;
    if (st) {
      errors.push(...(st.errors || []));
      Object.assign(state.names, st.display_names || {});
      if (st.refresh_seconds) state.refreshMs = st.refresh_seconds * 1000;
      $("model").textContent = st.model_version ? `model ${st.model_version}` : "no model";
      renderKpis(st, se, al);
      renderFilter(st);
    }
    if (se) for (const [b, s] of Object.entries(se.brands || {})) state.names[b] = s.display;
    const hasData = !!(se && se.watermark !== null && se.minutes.length) || !!(st && st.aggregate_total);
    $("empty").hidden = hasData || !st;
    $("content").hidden = !hasData;
    if (hasData) {
      if (se && se.watermark !== null) {
        renderCharts(se, al);
        $("eventtime").textContent = `event time ${dayOf(se.watermark)} ${hhmm(se.watermark)} UTC`;
      }
      if (st) renderCards(st, se && se.watermark !== null ? trimmed(se) : se, al);
      if (al) renderAlerts(al);
      if (posts.status === "fulfilled") renderPosts(posts.value.posts);
    }
    const box = $("errors");
    box.replaceChildren(...errors.map((e) => el("div", {}, `unavailable: ${e}`)));
    box.hidden = !errors.length;
    const live = $("live");
    live.className = "pill " + (errors.length ? "pill-down" : hasData ? "pill-live" : "pill-wait");
    live.textContent = errors.length ? "degraded" : hasData ? "live" : "waiting for posts";
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "1";
  }

  async function loop() {
    try { await refresh(); } catch (err) { console.error(err); }
    setTimeout(loop, state.refreshMs);
  }

  $("brand-filter").addEventListener("change", (event) => {
    state.brandFilter = event.target.value;
    refresh().catch((err) => console.error(err));
  });
  loop();
})();
