// Texts of the page in French, Dutch and English. Keys of `signal.*` are the API's signal reasons.
"use strict";
window.QUARTIER_I18N = {
  fr: {
    connecting: "connexion…", live: "en direct", offline: "hors ligne",
    gateway_offline: "Passerelle hors ligne : pas de données du compteur pour l'instant.",
    page_offline: "Connexion perdue avec le service : nouvel essai…",
    surplus_now: "Surplus maintenant", import: "Prélevé", export: "Injecté", shared: "Partagé",
    quarter_hour: "Quart d'heure", today: "Aujourd'hui", this_month: "Ce mois-ci", month_peak: "Pointe du mois",
    savings: "Économie", self_sufficiency: "Autonomie",
    savings_loss: "Le partage vous coûte {eur} : les frais de partage de votre fournisseur dépassent l'économie.",
    headroom: "marge ≈ {w}", until: "jusqu'à {t}", left: "encore {m} min",
    basis_operation: "surplus de l'opération de partage", basis_own_meter: "votre propre compteur", basis_none: "pas de données",
    note_own_meter: "Provisoire. Sans données de la communauté, seul votre compteur est connu : l'énergie partagée reste à 0.",
    note_operation: "Provisoire, réparti sur les quarts d'heure de toute l'opération de partage ; le gestionnaire de réseau publie les chiffres définitifs chaque mois.",
    given: "Votre production partagée avec les voisins : {kwh}",
    meter: "compteur {id}", updated: "mis à jour {t}",
    signal: {
      surplus: "Surplus maintenant : faites tourner vos appareils.",
      small_surplus: "Petit surplus : seulement de petits appareils.",
      no_surplus: "Pas de surplus : attendez si vous pouvez.",
      stale_data: "Pas de données récentes : surplus incertain.",
      no_data: "En attente du compteur…",
      reduce_now: "Réduisez votre consommation maintenant, svp.",
      collective_consume: "La communauté vous invite à consommer maintenant."
    },
    alert_from: "Message de la communauté : {m}",
    alert_result_less: "Lors de la dernière alerte ({d}), le quartier a consommé {p} % de moins que d'habitude.",
    alert_result_more: "Lors de la dernière alerte ({d}), le quartier a consommé {p} % de plus que d'habitude.",
    alert_result_none: "Dernière alerte ({d}) : pas encore assez de données pour mesurer l'effort du quartier."
  },
  nl: {
    connecting: "verbinden…", live: "live", offline: "offline",
    gateway_offline: "Gateway offline: voorlopig geen metergegevens.",
    page_offline: "Verbinding met de dienst verloren: nieuwe poging…",
    surplus_now: "Overschot nu", import: "Afname", export: "Injectie", shared: "Gedeeld",
    quarter_hour: "Kwartier", today: "Vandaag", this_month: "Deze maand", month_peak: "Maandpiek",
    savings: "Besparing", self_sufficiency: "Zelfvoorziening",
    savings_loss: "Delen kost u {eur}: de deelkosten van uw leverancier zijn hoger dan de besparing.",
    headroom: "marge ≈ {w}", until: "tot {t}", left: "nog {m} min",
    basis_operation: "overschot van het deelinitiatief", basis_own_meter: "uw eigen meter", basis_none: "geen gegevens",
    note_own_meter: "Voorlopig. Zonder gegevens van de gemeenschap is enkel uw meter gekend: gedeelde energie blijft 0.",
    note_operation: "Voorlopig, verdeeld over de kwartieren van het hele deelinitiatief; de netbeheerder publiceert de definitieve cijfers maandelijks.",
    given: "Uw productie gedeeld met de buren: {kwh}",
    meter: "meter {id}", updated: "bijgewerkt {t}",
    signal: {
      surplus: "Nu overschot: zet uw toestellen aan.",
      small_surplus: "Klein overschot: enkel kleine toestellen.",
      no_surplus: "Geen overschot: wacht als het kan.",
      stale_data: "Geen recente gegevens: overschot onzeker.",
      no_data: "Wachten op de meter…",
      reduce_now: "Verminder nu uw verbruik, a.u.b.",
      collective_consume: "De gemeenschap vraagt u nu te verbruiken."
    },
    alert_from: "Bericht van de gemeenschap: {m}",
    alert_result_less: "Tijdens de laatste oproep ({d}) verbruikte de buurt {p} % minder dan gewoonlijk.",
    alert_result_more: "Tijdens de laatste oproep ({d}) verbruikte de buurt {p} % meer dan gewoonlijk.",
    alert_result_none: "Laatste oproep ({d}): nog niet genoeg gegevens om het effect van de buurt te meten."
  },
  en: {
    connecting: "connecting…", live: "live", offline: "offline",
    gateway_offline: "Gateway offline: no meter data for now.",
    page_offline: "Lost the connection to the service: retrying…",
    surplus_now: "Surplus now", import: "Import", export: "Export", shared: "Shared",
    quarter_hour: "Quarter-hour", today: "Today", this_month: "This month", month_peak: "Month peak",
    savings: "Savings", self_sufficiency: "Self-sufficiency",
    savings_loss: "Sharing costs you {eur}: your supplier's sharing fee is more than you save.",
    headroom: "headroom ≈ {w}", until: "until {t}", left: "{m} min left",
    basis_operation: "surplus of the sharing operation", basis_own_meter: "your own meter", basis_none: "no data",
    note_own_meter: "Provisional. Without community data only your own meter is known: shared energy stays at 0.",
    note_operation: "Provisional, allocated over the whole sharing operation's quarter-hours; the grid operator publishes the binding figures monthly.",
    given: "Your production shared with the neighbours: {kwh}",
    meter: "meter {id}", updated: "updated {t}",
    signal: {
      surplus: "Surplus now: run your appliances.",
      small_surplus: "Small surplus: small appliances only.",
      no_surplus: "No surplus: wait if you can.",
      stale_data: "No recent data: surplus uncertain.",
      no_data: "Waiting for the meter…",
      reduce_now: "Please reduce your consumption now.",
      collective_consume: "The community invites you to consume now."
    },
    alert_from: "Message from the community: {m}",
    alert_result_less: "During the last alert ({d}) the street used {p} % less than usual.",
    alert_result_more: "During the last alert ({d}) the street used {p} % more than usual.",
    alert_result_none: "Last alert ({d}): not enough data yet to measure the street's effort."
  }
};
