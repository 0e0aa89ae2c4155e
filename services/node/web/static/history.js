// Quartier node page: the history card (a day by hour, a week or a month by day, a year by month,
// from /api/v1/history) and the meter card (registers, the projected quarter-hour peak against the
// month's). Listens to app.js's "quartier:live" and "quartier:lang" events; nothing from outside.
"use strict";
(function () {
  const T = window.QUARTIER_I18N;
  const $ = (id) => document.getElementById(id);
  const SVGNS = "http://www.w3.org/2000/svg";
  const st = { period: "day", at: null, today: null, data: null, live: null, focus: -1, seq: 0 };

  const lang = () => (T[document.documentElement.lang] ? document.documentElement.lang : "en");
  const locale = () => ({ fr: "fr-BE", nl: "nl-BE", en: "en-GB" })[lang()];
  function t(key, vars) {
    let s = key.split(".").reduce((o, k) => (o ? o[k] : undefined), T[lang()]);
    if (s === undefined) s = key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", v);
    return s;
  }
  const zone = () => (st.data && st.data.timezone) || (st.live && st.live.timezone) || undefined;
  const num = (x, d) => x.toLocaleString(locale(), { maximumFractionDigits: d, minimumFractionDigits: 0 });
  function kwh(wh) {
    if (wh === null || wh === undefined) return "–";
    return num(wh / 1000, Math.abs(wh) < 10000 ? 2 : 1) + " kWh";
  }
  function watts(w) {
    if (w === null || w === undefined) return "–";
    return Math.abs(w) >= 1000 ? num(w / 1000, 2) + " kW" : num(Math.round(w), 0) + " W";
  }
  // gas in m³ with the meter's resolution (1 dm³), in the page's locale
  const m3 = (x) => (x === null || x === undefined ? "–" : num(x, 3) + " m³");
  const euro = (x) => (x === null || x === undefined ? "–" : x.toLocaleString(locale(), { style: "currency", currency: "EUR" }));
  const pct = (x) => (x === null || x === undefined || !isFinite(x) ? "–" : num(Math.round(x * 100), 0) + " %");
  const dayOf = (iso) => new Date(iso);  // an instant; shown in the node's time zone
  const fmt = (iso, o) => dayOf(iso).toLocaleString(locale(), Object.assign({ timeZone: zone() }, o));

  // -- the meter card ---------------------------------------------------------------------------
  // an MBus reading's time: the hour on the day of the live reading, else with its date
  function readTime(iso, now) {
    const day = (x) => fmt(x, { year: "numeric", month: "numeric", day: "numeric" });
    const hm = fmt(iso, { hour: "2-digit", minute: "2-digit" });
    return now && day(iso) === day(now) ? hm : fmt(iso, { day: "numeric", month: "short" }) + " " + hm;
  }
  function renderMeter() {
    const L = st.live;
    if (!L) return;
    const q = L.quarter_hour, reg = L.registers;
    const proj = q ? q.projected_demand_w : null;
    $("m-projected").textContent = watts(proj);
    $("m-peak").textContent = watts(L.month_peak_w);
    $("m-reg-import").textContent = reg && reg.import_wh_total != null ? num(reg.import_wh_total / 1000, 3) + " kWh" : "–";
    $("m-reg-export").textContent = reg && reg.export_wh_total != null ? num(reg.export_wh_total / 1000, 3) + " kWh" : "–";
    // the gas and water registers (MBus), each with the time its channel was read
    for (const kind of ["gas", "water"]) {
      const m = (L.submeters || []).find((x) => x.kind === kind);
      $("m-" + kind).hidden = !m;
      if (!m) continue;
      const unit = m.unit === "m3" ? "m³" : m.unit;
      $("m-" + kind + "-value").textContent = m.value.toLocaleString(locale(), { minimumFractionDigits: 3, maximumFractionDigits: 3 }) + " " + unit;
      $("m-" + kind + "-time").textContent = m.time ? t("meter_card.read_at", { t: readTime(m.time, L.time) }) : "";
    }
    const note = $("m-peak-note");
    if (proj != null && L.month_peak_w != null) {
      const over = proj > L.month_peak_w;
      const text = t(over ? "meter_card.over_peak" : "meter_card.under_peak", { w: watts(L.month_peak_w) });
      if (note.textContent !== text) note.textContent = text;
      note.classList.toggle("over", over);
    } else note.textContent = "";
  }

  // -- the history card -------------------------------------------------------------------------
  function periodLabel(d) {
    if (!d) return "";
    if (d.period === "day") return fmt(d.from, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
    if (d.period === "week") {
      const last = new Date(Date.parse(d.to) - 3600000).toISOString();
      return fmt(d.from, { day: "numeric", month: "short" }) + " – " + fmt(last, { day: "numeric", month: "short", year: "numeric" });
    }
    if (d.period === "month") return fmt(new Date(Date.parse(d.from) + 43200000).toISOString(), { month: "long", year: "numeric" });
    return d.label;
  }
  function bucketLabel(d, r, short) {
    if (d.period === "day") return short ? fmt(r.start, { hour: "numeric" }) : fmt(r.start, { hour: "2-digit", minute: "2-digit" }) + "–" + fmt(r.end, { hour: "2-digit", minute: "2-digit" });
    const mid = new Date(Date.parse(r.start) + 43200000).toISOString();  // noon: the local day whatever the DST
    if (d.period === "week") return fmt(mid, short ? { weekday: "short" } : { weekday: "long", day: "numeric", month: "long" });
    if (d.period === "month") return fmt(mid, short ? { day: "numeric" } : { weekday: "long", day: "numeric", month: "long" });
    return fmt(mid, short ? { month: "short" } : { month: "long", year: "numeric" });
  }
  // a round scale step: 1, 2 or 5 times a power of ten, about four steps to the top
  function step(max) {
    const raw = max / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  }
  function el(name, attrs, text) {
    const e = document.createElementNS(SVGNS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderChart() {
    const d = st.data, svg = $("h-chart");
    if (!d) return;
    $("h-label").textContent = periodLabel(d);
    document.querySelectorAll("#history-card [data-period]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.period === d.period)));
    $("h-next").disabled = !!st.today && d.next > st.today;
    const rows = d.buckets, n = rows.length;
    // drawn at the size it is shown, so the scale's text is real 11 px text on a phone too
    const W = Math.max(280, Math.round(svg.getBoundingClientRect().width) || 600), H = 220, left = 40, right = 6, top = 16, bottom = 22;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const up = Math.max(100, ...rows.map((r) => r.export_wh)), down = Math.max(100, ...rows.map((r) => r.import_wh));
    const s = step(Math.max(up, down));
    const upTop = Math.ceil(up / s) * s, downTop = Math.ceil(down / s) * s;
    const scale = (H - top - bottom) / (upTop + downTop);
    const mid = top + upTop * scale, bw = (W - left - right) / n;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const grid = el("g", { class: "h-grid" });
    for (let v = -downTop; v <= upTop + 1e-9; v += s) {
      const y = mid - v * scale;
      grid.appendChild(el("line", { x1: left, x2: W - right, y1: y.toFixed(1), y2: y.toFixed(1), class: v === 0 ? "zero" : "" }));
      grid.appendChild(el("text", { x: left - 4, y: (y + 3.5).toFixed(1), "text-anchor": "end" }, num(Math.abs(v) / 1000, 2)));
    }
    grid.appendChild(el("text", { x: 2, y: 10, "text-anchor": "start", class: "unit" }, "kWh"));
    svg.appendChild(grid);
    const bars = el("g", { class: "h-bars" });
    const every = n > 24 ? 5 : n > 12 ? 3 : 1;
    rows.forEach((r, i) => {
      const x = left + i * bw, w = Math.max(1, bw - 2);
      const g = el("g", { "data-i": i, class: "bucket" + (i === st.focus ? " focus" : "") + (r.estimated_quarter_hours ? " est" : "") });
      g.appendChild(el("rect", { class: "hit", x: x.toFixed(1), y: top, width: bw.toFixed(1), height: H - top - bottom }));
      if (r.export_wh > 0) g.appendChild(el("rect", { class: "export", x: (x + 1).toFixed(1), y: (mid - r.export_wh * scale).toFixed(1), width: w.toFixed(1), height: (r.export_wh * scale).toFixed(1) }));
      if (r.import_wh > 0) g.appendChild(el("rect", { class: "import", x: (x + 1).toFixed(1), y: mid.toFixed(1), width: w.toFixed(1), height: (r.import_wh * scale).toFixed(1) }));
      if (r.shared_wh > 0) g.appendChild(el("rect", { class: "shared", x: (x + 1).toFixed(1), y: mid.toFixed(1), width: w.toFixed(1), height: (r.shared_wh * scale).toFixed(1) }));
      bars.appendChild(g);
      if (i % every === 0 || n <= 12) bars.appendChild(el("text", { x: (x + bw / 2).toFixed(1), y: H - 6, "text-anchor": "middle", class: "x" }, bucketLabel(d, r, true)));
    });
    svg.appendChild(bars);
    const tot = d.totals;
    svg.setAttribute("aria-label", t("history.chart_label", { title: periodLabel(d), imp: kwh(tot.import_wh), exp: kwh(tot.export_wh), sh: kwh(tot.shared_wh) }));
    renderTotals();
    showTip(st.focus);
  }

  function renderTotals() {
    const d = st.data, tot = d.totals, items = [];
    items.push([t("import"), kwh(tot.import_wh)], [t("export"), kwh(tot.export_wh)], [t("shared"), kwh(tot.shared_wh)]);
    if (tot.production_wh !== null) {
      // a solar home: its own production and how much of it the home used, beside the community's share
      const use = tot.consumption_wh;
      items.push([t("history.production"), kwh(tot.production_wh)], [t("history.self_consumption"), kwh(tot.self_consumption_wh)],
                 [t("history.own_share"), pct(use ? tot.self_consumption_wh / use : null)],
                 [t("history.community_share"), pct(use ? tot.shared_wh / use : null)]);
    }
    const byTariff = d.prices && Object.keys(d.prices.grid_eur_kwh_by_tariff || {}).length > 0;
    const priced = d.prices && (d.prices.grid_eur_kwh !== null || d.prices.shared_eur_kwh !== null || byTariff);
    if (priced) items.push([t("history.import_cost"), euro(tot.grid_cost_eur)], [t("history.shared_cost"), euro(tot.shared_cost_eur)]);
    // grid energy per meter tariff (day/night, dal/normaal) with its euros, where the store knows the split
    const split = tot.grid_import_by_tariff_wh, costs = tot.grid_cost_by_tariff_eur || {};
    if (split && Object.keys(split).some((k) => k !== "0")) {
      for (const k of Object.keys(split).sort()) {
        const eur = costs[k] === null || costs[k] === undefined ? "" : " · " + euro(costs[k]);
        items.push([t("history.tariff_grid", { name: tariffName(d, k) }), kwh(split[k]) + eur]);
      }
    }
    // gas used (the MBus gas meter's register, day by day); flagged where a day is not whole
    if (tot.gas_m3 !== null && tot.gas_m3 !== undefined)
      items.push([t("history.gas"), m3(tot.gas_m3) + (tot.gas_partial ? " (" + t("history.gas_partial") + ")" : "")]);
    const dl = $("h-totals");
    dl.innerHTML = "";
    for (const [k, v] of items) {
      const div = document.createElement("div"), dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k; dd.textContent = v; div.append(dt, dd); dl.appendChild(div);
    }
    $("h-note").textContent = (tot.has_data ? "" : t("history.no_data") + " ") +
      (priced ? "" : t("history.prices_unknown") + " ") + t(d.basis === "operation" ? "note_operation" : "note_own_meter");
  }

  // a tariff's name: the configured word translated (day, night, low, normal), other words as written
  function tariffName(d, k) {
    const name = (d.tariff_names || {})[k];
    if (!name) return t("history.tariff_n", { n: k });
    const word = T[lang()].history.tariffs[name.toLowerCase()];
    return word || name;
  }

  function showTip(i) {
    const tip = $("h-tip"), d = st.data;
    document.querySelectorAll("#h-chart .bucket").forEach((g) => g.classList.toggle("focus", Number(g.dataset.i) === i));
    if (!d || i < 0 || i >= d.buckets.length) { tip.hidden = true; return; }
    const r = d.buckets[i];
    let text = t("history.tooltip", { t: bucketLabel(d, r, false), imp: kwh(r.import_wh), exp: kwh(r.export_wh), sh: kwh(r.shared_wh) });
    if (r.production_wh !== null) text += " · " + t("history.production").toLowerCase() + " " + kwh(r.production_wh);
    if (r.grid_cost_eur !== null) text += " · " + euro(r.grid_cost_eur + (r.shared_cost_eur || 0));
    if (r.gas_m3 !== null && r.gas_m3 !== undefined) text += " · " + t("history.gas").toLowerCase() + " " + m3(r.gas_m3);
    tip.textContent = text;
    tip.hidden = false;
    const frac = (i + 0.5) / d.buckets.length;
    tip.style.left = Math.min(70, Math.max(0, frac * 100 - 15)) + "%";
  }

  async function load() {
    const my = ++st.seq;
    const q = "?period=" + st.period + (st.at ? "&at=" + st.at : "");
    try {
      const r = await fetch("/api/v1/history" + q, { cache: "no-store" });
      if (!r.ok) throw new Error(r.status);
      const d = await r.json();
      if (my !== st.seq) return;  // a newer request was made meanwhile
      st.data = d;
      if (st.focus >= d.buckets.length) st.focus = -1;
      renderChart();
      window.quartierHistoryLoads = (window.quartierHistoryLoads || 0) + 1;  // read by the browser test
    } catch (e) { /* the stream's banner says what is wrong */ }
  }

  document.querySelectorAll("#history-card [data-period]").forEach((b) => b.addEventListener("click", () => {
    st.period = b.dataset.period; st.focus = -1; load();
  }));
  $("h-prev").addEventListener("click", () => { if (st.data) { st.at = st.data.previous; st.focus = -1; load(); } });
  $("h-next").addEventListener("click", () => { if (st.data) { st.at = st.data.next; st.focus = -1; load(); } });
  const chart = $("h-chart");
  chart.setAttribute("tabindex", "0");
  const at = (ev) => {
    const g = ev.target.closest && ev.target.closest(".bucket");
    return g ? Number(g.dataset.i) : -1;
  };
  chart.addEventListener("pointermove", (ev) => { $("h-tip").setAttribute("aria-live", "off"); const i = at(ev); if (i >= 0 && i !== st.focus) { st.focus = i; showTip(i); } });
  chart.addEventListener("pointerleave", () => { st.focus = -1; showTip(-1); });
  chart.addEventListener("focus", () => { if (st.focus < 0 && st.data) { st.focus = 0; showTip(0); } });
  chart.addEventListener("blur", () => { st.focus = -1; showTip(-1); });
  chart.addEventListener("keydown", (ev) => {
    if (!st.data) return;
    const n = st.data.buckets.length;
    const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -n, End: n };
    if (!(ev.key in moves)) return;
    ev.preventDefault();
    $("h-tip").setAttribute("aria-live", "polite");  // said when moved by the keyboard, not under a mouse
    st.focus = Math.max(0, Math.min(n - 1, (st.focus < 0 ? 0 : st.focus) + moves[ev.key]));
    showTip(st.focus);
  });

  let resized = null;
  window.addEventListener("resize", () => { clearTimeout(resized); resized = setTimeout(renderChart, 150); });
  document.addEventListener("quartier:lang", () => { renderMeter(); renderChart(); });
  document.addEventListener("quartier:live", (ev) => {
    st.live = ev.detail;
    renderMeter();
    const day = st.live && st.live.today ? st.live.today.day : null;
    if (day && day !== st.today) { st.today = day; load(); }
  });
  load();
})();
