// The signal's one story (issue 18): the light, its sentences and the gauge all speak about the running
// quarter-hour's balance and the power that can still be added until it ends; the meter's power of this
// second is shown apart, as what it is. The sentences come from the server (services/signal_words.py),
// so the page, the MQTT feed and the monthly sheet use the same words.
"use strict";
window.QuartierStory = (function () {
  const $ = (id) => document.getElementById(id);

  function signed(w, watts) {
    if (w === null || w === undefined) return "–";
    const r = Math.round(w);
    return (r > 0 ? "+" : r < 0 ? "\u2212" : "") + watts(Math.abs(r));
  }

  // ctx: {t, lang, watts, hhmm}
  function render(L, ctx) {
    const s = L.signal;
    const { t, lang, watts, hhmm } = ctx;
    const w = (s.words && s.words[lang]) || null;
    // a live region: written only when the words change, so it is not re-announced every second
    const sentence = w ? w.headline : t("signal." + s.reason);
    if ($("sentence").textContent !== sentence) $("sentence").textContent = sentence;
    $("reason").textContent = w ? w.reason : "";
    $("headroom").textContent = "";  // said by the reason and under the gauge, not a third time
    $("until").textContent = !s.held && s.valid_until ? t("until", { t: hhmm(s.valid_until) }) : "";
    document.body.dataset.held = s.held ? "1" : "";

    // the gauge: the signal's own figure, the quarter-hour's projected balance (operation or own meter)
    const b = s.balance_w;
    const span = Math.max(3000, Math.ceil(Math.abs(b || 0) / 1000) * 1000);
    const frac = b === null || b === undefined ? 0 : Math.max(-1, Math.min(1, b / span));
    $("needle").style.transform = "rotate(" + (frac * 90) + "deg)";
    $("g-min").textContent = "-" + span / 1000 + " kW";
    $("g-max").textContent = "+" + span / 1000 + " kW";
    $("surplus-w").textContent = signed(b, watts);
    $("gauge").setAttribute("aria-label", t("gauge_label", { w: signed(b, watts), min: watts(-span), max: watts(span) }));
    const end = s.quarter_end ? hhmm(s.quarter_end) : "";
    $("can-add").textContent = b === null || b === undefined ? ""
      : s.headroom_w > 0 ? t("can_add", { w: watts(s.headroom_w), t: end }) : t("cannot_add", { t: end });

    // this second's meter power, labelled as such
    const p = L.power;
    const net = p ? p.export_w - p.import_w : null;
    $("meter-now").textContent = net === null ? ""
      : net < 0 ? t("meter_now_import", { w: watts(-net) })
      : net > 0 ? t("meter_now_export", { w: watts(net) }) : t("meter_now_zero");
  }

  return { render };
})();
