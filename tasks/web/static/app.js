// shotline review: keyboard, in-place decisions and live updates. No framework, no remote
// anything (the CSP allows only this origin). Without scripts the forms still work.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var POLL_MS = 4000;
  var current = -1;

  function cards() { return Array.prototype.slice.call(document.querySelectorAll(".card")); }

  function focusCard(i) {
    var all = cards();
    if (!all.length) { return; }
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach(function (c, n) { c.classList.toggle("current", n === current); });
    all[current].focus({ preventScroll: true });
    all[current].scrollIntoView({ block: "nearest" });
  }

  function currentCard() {
    var all = cards();
    if (current < 0 && all.length) { focusCard(0); }
    return all[current] || null;
  }

  function say(card, text, isError) {
    var m = card.querySelector(".message");
    if (m) { m.textContent = text; m.classList.toggle("error", !!isError); }
  }

  function show(card, state, reviewer, action) {
    card.dataset.state = state;
    var v = card.querySelector(".state-value");
    if (v) { v.textContent = state; }
    var d = card.querySelector(".decided");
    if (d && reviewer) { d.textContent = (action || state) + " by " + reviewer; }
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().catch(function () { return { error: "HTTP " + r.status }; })
        .then(function (j) { return { ok: r.ok, body: j }; });
    });
  }

  function decided(card, res, state) {
    if (!res.ok) { say(card, res.body.error || "failed", true); return; }
    (res.body.ids || []).forEach(function (id) {
      var c = document.getElementById("shot-" + id);
      if (c) { show(c, res.body.state || state, res.body.reviewer); }
    });
    say(card, (res.body.state || state) + " as " + res.body.reviewer, false);
  }

  function approve(card) {
    post("/api/shots/" + card.dataset.id + "/approve").then(function (res) {
      decided(card, res, "approved");
      if (res.ok) { focusCard(current + 1); }
    });
  }

  function reasonOf(card) {
    var note = card.querySelector(".note");
    var sel = card.querySelector(".reason");
    return ((note && note.value.trim()) || (sel && sel.value) || "").trim();
  }

  function reject(card) {
    var reason = reasonOf(card);
    if (!reason) { say(card, "rejecting needs a reason", true); return; }
    post("/api/shots/" + card.dataset.id + "/reject", { reason: reason }).then(function (res) {
      decided(card, res, "rejected");
      card.classList.remove("rejecting");
      if (res.ok) { focusCard(cards().indexOf(card) + 1); }
    });
  }

  function pick(card) {
    post("/api/shots/" + card.dataset.id + "/pick").then(function (res) {
      if (!res.ok) { say(card, res.body.error || "failed", true); return; }
      show(card, "approved", res.body.reviewer, "picked");
      (res.body.rejected || []).forEach(function (id) {
        var c = document.getElementById("shot-" + id);
        if (c) { show(c, "rejected", res.body.reviewer, "not picked"); }
      });
      say(card, "picked by " + res.body.reviewer, false);
    });
  }

  function pickCandidate(n) {
    var card = currentCard();
    if (!card || !card.dataset.group) { return; }
    var match = cards().filter(function (c) {
      return c.dataset.group === card.dataset.group && Number(c.dataset.candidate) === n - 1;
    })[0];
    if (match) { pick(match); } else { say(card, "no candidate " + n + " on this page", true); }
  }

  function selected() {
    return cards().filter(function (c) {
      var box = c.querySelector(".pick-box");
      return box && box.checked;
    });
  }

  function updateBulk() {
    var bar = document.querySelector(".bulk");
    if (!bar) { return; }
    var n = selected().length;
    bar.hidden = n === 0;
    bar.querySelector(".count").textContent = n + " selected";
  }

  function bulk(action) {
    var chosen = selected();
    if (!chosen.length) { return; }
    var body = { ids: chosen.map(function (c) { return Number(c.dataset.id); }), action: action };
    if (action === "reject") { body.reason = reasonOf(chosen[0]) || "rejected in bulk"; }
    post("/api/shots/bulk", body).then(function (res) {
      decided(chosen[0], res, action === "approve" ? "approved" : "rejected");
      if (res.ok) {
        chosen.forEach(function (c) { c.querySelector(".pick-box").checked = false; });
        updateBulk();
      }
    });
  }

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "SELECT" || el.tagName === "TEXTAREA");
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var card;
    if (typing(ev.target)) {
      card = ev.target.closest(".card");
      if (ev.key === "Escape" && card) { card.classList.remove("rejecting"); card.focus(); }
      if (ev.key === "Enter" && ev.target.tagName === "SELECT" && card) {
        ev.preventDefault(); reject(card);
      }
      return;
    }
    if (ev.key === "j") { focusCard(current + 1); }
    else if (ev.key === "k") { focusCard(current - 1); }
    else if (ev.key === "a") { card = currentCard(); if (card) { approve(card); } }
    else if (ev.key === "r") {
      card = currentCard();
      if (card) {
        ev.preventDefault();
        card.classList.add("rejecting");
        var sel = card.querySelector(".reason");
        if (sel) { sel.focus(); }
      }
    }
    else if (ev.key === "x") {
      card = currentCard();
      var box = card && card.querySelector(".pick-box");
      if (box) { box.checked = !box.checked; updateBulk(); }
    }
    else if (/^[1-8]$/.test(ev.key)) { pickCandidate(Number(ev.key)); }
    else { return; }
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var card = form.closest(".card");
    if (!card) { return; }
    ev.preventDefault();
    current = cards().indexOf(card);
    if (form.classList.contains("approve-form")) { approve(card); }
    else if (form.classList.contains("reject-form")) { reject(card); }
    else if (form.classList.contains("pick-form")) { pick(card); }
  });

  document.addEventListener("change", function (ev) {
    if (ev.target.classList && ev.target.classList.contains("pick-box")) { updateBulk(); }
  });

  var bulkBar = document.querySelector(".bulk");
  if (bulkBar) {
    bulkBar.querySelector(".bulk-approve").addEventListener("click", function () { bulk("approve"); });
    bulkBar.querySelector(".bulk-reject").addEventListener("click", function () { bulk("reject"); });
  }

  // Live: decisions made elsewhere (CLI, another browser) show on the cards; shots a running
  // batch puts into review are counted, and a reload shows them.
  var queue = document.getElementById("queue");
  function poll() {
    var ids = cards().map(function (c) { return c.dataset.id; }).join(",");
    var since = queue ? queue.dataset.since : "";
    var url = "/api/updates?ids=" + encodeURIComponent(ids) +
      (since ? "&since=" + encodeURIComponent(since) : "");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) {
        if (!j) { return; }
        j.shots.forEach(function (s) {
          var c = document.getElementById("shot-" + s.id);
          if (c && c.dataset.state !== s.state) { show(c, s.state, s.reviewer, s.action); }
        });
        var live = document.getElementById("live");
        if (live) {
          live.textContent = j.new_pending ?
            j.new_pending + " new shot(s) awaiting review: reload to see them" : "";
        }
      })
      .catch(function () { /* the next poll tries again */ });
  }
  if (cards().length) {
    focusCard(0);
    window.setInterval(poll, POLL_MS);
  }
})();
