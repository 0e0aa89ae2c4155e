// Quartier node page: the live object from the server-sent-event stream, the day's quarter-hours
// and the month's shared energy from the API. No framework, nothing from outside this node.
"use strict";
(function () {
  const T = window.QUARTIER_I18N;
  document.documentElement.classList.remove("nojs");
  const $ = (id) => document.getElementById(id);
  const state = { lang: "en", live: null, qh: null, month: null, day: null, es: null, streamUp: false };

  // -- language ---------------------------------------------------------------------------------
  function pickLang() {
    const q = new URLSearchParams(location.search).get("lang");
    if (q && T[q]) return q;
    try { const s = localStorage.getItem("quartier.lang"); if (s && T[s]) return s; } catch (e) { /* private mode */ }
    const d = document.documentElement.dataset.defaultLang;
    if (d && T[d]) return d;
    for (const l of navigator.languages || [navigator.language || "en"]) {
      const k = l.slice(0, 2).toLowerCase();
      if (T[k]) return k;
    }
    return "en";
  }
  function t(key, vars) {
    let s = key.split(".").reduce((o, k) => (o ? o[k] : undefined), T[state.lang]);
    if (s === undefined) s = key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace("{" + k + "}", v);
    return s;
  }
  function setLang(l) {
    state.lang = l;
    document.documentElement.lang = l;
    try { localStorage.setItem("quartier.lang", l); } catch (e) { /* ignore */ }
    // the server renders the next visit in this language (services/node/web/page.py)
    document.cookie = "quartier_lang=" + l + "; path=/; max-age=31536000; SameSite=Lax";
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll("[data-i18n-label]").forEach((el) => { el.setAttribute("aria-label", t(el.dataset.i18nLabel)); });
    document.querySelectorAll("#langs button").forEach((b) => b.classList.toggle("on", b.dataset.lang === l));
    render();
    document.dispatchEvent(new CustomEvent("quartier:lang", { detail: l }));
  }

  // -- formatting -------------------------------------------------------------------------------
  const locale = () => ({ fr: "fr-BE", nl: "nl-BE", en: "en-GB" })[state.lang];
  function watts(w) {
    if (w === null || w === undefined) return "–";
    const a = Math.abs(w);
    return a >= 1000 ? (w / 1000).toLocaleString(locale(), { maximumFractionDigits: 2 }) + " kW"
                     : Math.round(w).toLocaleString(locale()) + " W";
  }
  function kwh(wh) {
    if (wh === null || wh === undefined) return "–";
    return (wh / 1000).toLocaleString(locale(), { maximumFractionDigits: wh < 10000 ? 2 : 1 }) + " kWh";
  }
  // times in the community's time zone, whatever the phone's
  const zone = () => (state.live && state.live.timezone) || undefined;
  function hhmm(iso, seconds) {
    if (!iso) return "";
    const o = { hour: "2-digit", minute: "2-digit", timeZone: zone() };
    if (seconds) o.second = "2-digit";
    return new Date(iso).toLocaleTimeString(locale(), o);
  }
  // a local calendar day "YYYY-MM-DD" in the page's language (noon UTC: the same day everywhere)
  function longDate(day) {
    return new Date(day + "T12:00:00Z").toLocaleDateString(locale(), { weekday: "long", day: "numeric", month: "long", timeZone: "UTC" });
  }
  function pct(x) { return x === null || x === undefined ? "–" : Math.round(x * 100) + " %"; }
  function euro(x) {
    return x === null || x === undefined ? "–" : x.toLocaleString(locale(), { style: "currency", currency: "EUR" });
  }

  // -- rendering --------------------------------------------------------------------------------
  function render() {
    renderLive();
    renderBars();
    renderMonth();
  }

  function renderLive() {
    const L = state.live;
    const chip = $("status");
    const gatewayUp = L && L.gateway && L.gateway.connected;
    chip.className = "chip " + (state.streamUp && gatewayUp ? "live" : state.streamUp ? "down" : "");
    chip.textContent = state.streamUp ? (gatewayUp ? t("live") : t("offline")) : t("connecting");
    const banner = $("offline");
    banner.hidden = state.streamUp ? !!gatewayUp : !state.everConnected;
    banner.textContent = state.streamUp ? t("gateway_offline") : t("page_offline");
    if (!L) return;
    const s = L.signal;
    const light = $("light");
    light.className = "light " + s.state;
    light.setAttribute("aria-label", t("light." + s.state));
    document.body.dataset.signal = s.state;
    // sentences and gauge: one story about the quarter-hour (story.js)
    window.QuartierStory.render(L, { t, lang: state.lang, watts, hhmm });
    const am = $("alert-msg");
    am.hidden = !(s.alert && s.alert.message);
    am.textContent = s.alert && s.alert.message ? t("alert_from", { m: s.alert.message }) : "";
    am.classList.toggle("consume", !!(s.alert && s.alert.kind === "consume"));
    // the last finished alert's collective result ("the street used 18 % less")
    const ar = $("alert-result"), r = L.last_alert;
    ar.hidden = !r;
    if (r) {
      const d = new Date(r.until).toLocaleString(locale(), { weekday: "long", hour: "2-digit", minute: "2-digit", timeZone: zone() });
      const p = r.members_change_pct;
      ar.textContent = p === null || p === undefined ? t("alert_result_none", { d })
        : t(p <= 0 ? "alert_result_less" : "alert_result_more", { d, p: Math.abs(p).toLocaleString(locale(), { maximumFractionDigits: 0 }) });
    }

    $("surplus-basis").textContent = t("basis_" + s.basis);
    $("import-w").textContent = L.power ? watts(L.power.import_w) : "–";
    $("export-w").textContent = L.power ? watts(L.power.export_w) : "–";
    const q = L.quarter_hour;
    $("qh-left").textContent = q ? t("left", { m: Math.ceil(q.remaining_s / 60) }) : "–";
    $("qh-bar").style.width = q ? (100 * q.elapsed_s / 900).toFixed(1) + "%" : "0";
    if (L.today) {
      $("today-import").textContent = kwh(L.today.import_wh);
      $("today-export").textContent = kwh(L.today.export_wh);
      if (L.today.day !== state.day) { state.day = L.today.day; loadHistory(); }
      $("today-date").textContent = longDate(L.today.day);
    }
    $("month-peak").textContent = watts(L.month_peak_w);
    // the member's own declared loads (home automation) that ran while green, this month
    const dl = L.declared_loads, shown = !!dl && (dl.green_kwh > 0 || dl.running > 0);
    $("declared-loads").hidden = !shown;
    if (shown) {
      const k = kwh(dl.green_kwh * 1000);
      $("declared-loads").textContent = dl.savings_eur === null || dl.savings_eur === undefined
        ? t("declared_loads", { kwh: k }) : t("declared_loads_eur", { kwh: k, eur: euro(dl.savings_eur) });
    }
    $("meter").textContent = L.gateway.meter_id ? t("meter", { id: L.gateway.meter_id }) : "";
    $("updated").textContent = L.time ? t("updated", { t: hhmm(L.time, true) }) : "";
    renderBars();
  }

  function renderBars() {
    const svg = $("bars");
    const data = state.qh;
    if (!data) return;
    const start = Date.parse(data.from);
    const rows = data.quarter_hours.map((r) => ({ i: (Date.parse(r.start) - start) / 900000, imp: r.import_wh, exp: r.export_wh, sh: r.shared_wh || 0 }));
    const L = state.live;
    if (L && L.quarter_hour && L.quarter_hour.import_wh !== null) {
      const i = (Date.parse(L.quarter_hour.start) - start) / 900000;
      if (!rows.some((r) => r.i === i)) rows.push({ i: i, imp: L.quarter_hour.import_wh, exp: L.quarter_hour.export_wh, sh: 0, running: true });
    }
    const n = Math.max(92, Math.round((Date.parse(data.to) - start) / 900000));
    const w = 960 / n;
    const max = Math.max(100, ...rows.map((r) => Math.max(r.imp, r.exp)));
    const mid = 110, h = 105;
    const parts = ['<line class="mid" x1="0" x2="960" y1="110" y2="110"/>'];
    for (const r of rows) {
      if (r.i < 0 || r.i >= n) continue;
      const x = (r.i * w + 0.5).toFixed(1), bw = Math.max(1, w - 1).toFixed(1), cls = r.running ? " running" : "";
      const he = (r.exp / max) * h, hi = (r.imp / max) * h, hs = (Math.min(r.sh, r.imp) / max) * h;
      if (he > 0) parts.push(`<rect class="export${cls}" x="${x}" y="${(mid - he).toFixed(1)}" width="${bw}" height="${he.toFixed(1)}"/>`);
      if (hi > 0) parts.push(`<rect class="import${cls}" x="${x}" y="${mid}" width="${bw}" height="${hi.toFixed(1)}"/>`);
      if (hs > 0) parts.push(`<rect class="shared" x="${x}" y="${mid}" width="${bw}" height="${hs.toFixed(1)}"/>`);
    }
    svg.innerHTML = parts.join("");
    const imp = rows.reduce((a, r) => a + r.imp, 0), exp = rows.reduce((a, r) => a + r.exp, 0);
    svg.setAttribute("aria-label", t("bars_label", { imp: kwh(imp), exp: kwh(exp) }));
  }

  function renderMonth() {
    const m = state.month;
    if (!m) return;
    $("month-label").textContent = new Date(m.label + "-15T12:00:00Z").toLocaleDateString(locale(), { month: "long", year: "numeric", timeZone: "UTC" });
    $("month-shared").textContent = kwh(m.shared_wh);
    $("month-savings").textContent = euro(m.savings_eur);
    // honest savings: with the supplier's sharing fee a member can lose money by sharing, and is told so
    const loses = m.savings_eur != null && m.savings_eur < 0;
    $("month-savings").classList.toggle("loss", loses);
    $("month-loss").hidden = !loses;
    $("month-loss").textContent = loses ? t("savings_loss", { eur: euro(-m.savings_eur) }) : "";
    $("month-ss").textContent = pct(m.self_sufficiency);
    $("month-note").textContent = t(m.basis === "operation" ? "note_operation" : "note_own_meter");
    // a producer's side of the month: its injection that went to the neighbours
    const given = $("month-given");
    given.hidden = !(m.injection_shared_wh > 0);
    given.textContent = m.injection_shared_wh > 0 ? t("given", { kwh: kwh(m.injection_shared_wh) }) : "";
  }

  // -- data ---------------------------------------------------------------------------------------
  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }
  async function loadHistory() {
    try {
      const q = state.day ? "?from=" + state.day : "";
      state.qh = await getJSON("/api/v1/quarter-hours" + q);
      renderBars();
    } catch (e) { /* the stream's banner says what is wrong */ }
    try {
      state.month = await getJSON("/api/v1/allocation?period=month" + (state.day ? "&at=" + state.day : ""));
      renderMonth();
    } catch (e) { /* idem */ }
  }

  function connect() {
    const es = new EventSource("/api/v1/stream");
    state.es = es;
    es.addEventListener("live", (ev) => {
      state.streamUp = true;
      state.everConnected = true;
      state.live = JSON.parse(ev.data);
      window.quartierUpdates = (window.quartierUpdates || 0) + 1; // read by the browser test
      renderLive();
      document.dispatchEvent(new CustomEvent("quartier:live", { detail: state.live }));
    });
    es.addEventListener("quarter_hour", () => loadHistory());
    es.addEventListener("allocation", () => loadHistory());
    es.onerror = () => { state.streamUp = false; renderLive(); };
  }

  document.querySelectorAll("#langs button").forEach((b) => b.addEventListener("click", () => setLang(b.dataset.lang)));
  setLang(pickLang());
  getJSON("/api/v1/live").then((L) => {
    state.live = L; if (L.today) state.day = L.today.day; renderLive(); loadHistory();
    document.dispatchEvent(new CustomEvent("quartier:live", { detail: L }));
  })
    .catch(() => loadHistory());
  connect();
})();
