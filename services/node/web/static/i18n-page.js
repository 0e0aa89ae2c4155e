// Texts of the page's history, meter and accessibility labels, added to i18n.js's (same keys per
// language). The object is plain JSON: the server reads it too (services/node/web/page.py).
"use strict";
window.QUARTIER_I18N_PAGE = {
  "fr": {
    "language": "Langue",
    "light": {"green": "Feu vert", "amber": "Feu orange", "red": "Feu rouge", "none": "Feu éteint"},
    "gauge_label": "Bilan du quart d'heure : {w}, sur une échelle de {min} à {max}",
    "bars_label": "Quarts d'heure d'aujourd'hui : {imp} prélevés, {exp} injectés",
    "noscript": {"title": "Maintenant", "note": "Sans JavaScript, cette page montre l'état au moment où elle a été chargée et se recharge chaque minute."},
    "meter_card": {"title": "Compteur", "import_register": "Index prélèvement", "export_register": "Index injection",
                   "projected": "Pointe projetée du quart d'heure", "over_peak": "Au-dessus de la pointe du mois ({w}) : la facture de capacité augmenterait.",
                   "under_peak": "Sous la pointe du mois ({w}).",
                   "gas_register": "Index gaz", "water_register": "Index eau", "read_at": "relevé : {t}"},
    "history": {"title": "Historique", "period": "Période", "day": "Jour", "week": "Semaine", "month": "Mois", "year": "Année",
                "prev": "Période précédente", "next": "Période suivante", "no_data": "Pas de données pour cette période.",
                "chart_label": "{title} : {imp} prélevés, {exp} injectés, {sh} partagés", "total": "Total",
                "import_cost": "Prélevé au prix du réseau", "shared_cost": "Partagé au prix de la communauté",
                "prices_unknown": "Prix non configurés : pas de montants en euros.",
                "production": "Production", "self_consumption": "Autoconsommation", "community_share": "Part de la communauté",
                "own_share": "Part de votre production",
                "tooltip": "{t} · prélevé {imp} · injecté {exp} · partagé {sh}", "estimated": "dont estimé",
                "tariff_grid": "{name} (réseau)", "tariff_n": "Tarif {n}",
                "gas": "Gaz", "gas_partial": "partiel : relevés manquants ou compteur remplacé",
                "tariffs": {"day": "Jour", "night": "Nuit", "low": "Heures creuses", "normal": "Heures pleines"}}
  },
  "nl": {
    "language": "Taal",
    "light": {"green": "Groen licht", "amber": "Oranje licht", "red": "Rood licht", "none": "Licht uit"},
    "gauge_label": "Balans van het kwartier: {w}, op een schaal van {min} tot {max}",
    "bars_label": "Kwartieren van vandaag: {imp} afgenomen, {exp} geïnjecteerd",
    "noscript": {"title": "Nu", "note": "Zonder JavaScript toont deze pagina de toestand op het moment van laden en laadt ze elke minuut opnieuw."},
    "meter_card": {"title": "Meter", "import_register": "Meterstand afname", "export_register": "Meterstand injectie",
                   "projected": "Verwachte kwartierpiek", "over_peak": "Boven de maandpiek ({w}): het capaciteitstarief zou stijgen.",
                   "under_peak": "Onder de maandpiek ({w}).",
                   "gas_register": "Meterstand gas", "water_register": "Meterstand water", "read_at": "gemeten: {t}"},
    "history": {"title": "Geschiedenis", "period": "Periode", "day": "Dag", "week": "Week", "month": "Maand", "year": "Jaar",
                "prev": "Vorige periode", "next": "Volgende periode", "no_data": "Geen gegevens voor deze periode.",
                "chart_label": "{title}: {imp} afgenomen, {exp} geïnjecteerd, {sh} gedeeld", "total": "Totaal",
                "import_cost": "Afname aan de netprijs", "shared_cost": "Gedeeld aan de gemeenschapsprijs",
                "prices_unknown": "Geen prijzen ingesteld: geen bedragen in euro.",
                "production": "Productie", "self_consumption": "Eigen verbruik", "community_share": "Aandeel van de gemeenschap",
                "own_share": "Aandeel van uw productie",
                "tooltip": "{t} · afname {imp} · injectie {exp} · gedeeld {sh}", "estimated": "waarvan geschat",
                "tariff_grid": "{name} (net)", "tariff_n": "Tarief {n}",
                "gas": "Gas", "gas_partial": "onvolledig: ontbrekende metingen of meter vervangen",
                "tariffs": {"day": "Dag", "night": "Nacht", "low": "Dal", "normal": "Normaal"}}
  },
  "en": {
    "language": "Language",
    "light": {"green": "Green light", "amber": "Amber light", "red": "Red light", "none": "Light off"},
    "gauge_label": "Quarter-hour balance: {w}, on a scale from {min} to {max}",
    "bars_label": "Today's quarter-hours: {imp} imported, {exp} exported",
    "noscript": {"title": "Now", "note": "Without JavaScript this page shows the state when it was loaded and reloads every minute."},
    "meter_card": {"title": "Meter", "import_register": "Import register", "export_register": "Export register",
                   "projected": "Projected quarter-hour peak", "over_peak": "Above the month's peak ({w}): the capacity charge would rise.",
                   "under_peak": "Below the month's peak ({w}).",
                   "gas_register": "Gas register", "water_register": "Water register", "read_at": "read {t}"},
    "history": {"title": "History", "period": "Period", "day": "Day", "week": "Week", "month": "Month", "year": "Year",
                "prev": "Previous period", "next": "Next period", "no_data": "No data for this period.",
                "chart_label": "{title}: {imp} imported, {exp} exported, {sh} shared", "total": "Total",
                "import_cost": "Import at the grid price", "shared_cost": "Shared at the community price",
                "prices_unknown": "No prices configured: no amounts in euros.",
                "production": "Production", "self_consumption": "Self-consumption", "community_share": "Community share",
                "own_share": "Share of your production",
                "tooltip": "{t} · import {imp} · export {exp} · shared {sh}", "estimated": "estimated",
                "tariff_grid": "{name} (grid)", "tariff_n": "Tariff {n}",
                "gas": "Gas", "gas_partial": "partial: readings missing or meter replaced",
                "tariffs": {"day": "Day", "night": "Night", "low": "Low", "normal": "Normal"}}
  }
};
(function (T, P) {
  for (const lang of Object.keys(P)) T[lang] = Object.assign(T[lang] || {}, P[lang]);
})(window.QUARTIER_I18N, window.QUARTIER_I18N_PAGE);
