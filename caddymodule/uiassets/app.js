// llmspend web UI: forms and buttons call the JSON admin API with the
// session cookie and the page's CSRF token. The master key never reaches
// the browser. No dependencies, no inline handlers (the CSP forbids them).
(function () {
  "use strict";

  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // api calls an admin route; it resolves to the parsed body or rejects
  // with an Error carrying the server's message.
  function api(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {})
    }).then(function (res) {
      return res.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : {}; } catch (e) { data = null; }
        if (res.ok && data !== null && !(data && data.ok === false)) { return data; }
        var msg = (data && data.error && (data.error.message || data.error)) || (data && data.error) || text || ("HTTP " + res.status);
        if (res.status === 401) { msg = "Your session has ended. Reload the page to sign in again."; }
        var err = new Error(typeof msg === "string" ? msg : JSON.stringify(msg));
        err.data = data;
        throw err;
      });
    });
  }

  function show(el, text) { if (!el) { return; } el.textContent = text; el.hidden = false; }
  function hide(el) { if (el) { el.hidden = true; } }

  // --- dialogs ---
  $all("[data-open]").forEach(function (b) {
    b.addEventListener("click", function () {
      var d = $(b.getAttribute("data-open"));
      if (d && d.showModal) { d.showModal(); var f = $("input:not([type=hidden]),select", d); if (f) { f.focus(); } }
    });
  });
  $all("[data-close]").forEach(function (b) {
    b.addEventListener("click", function () { var d = b.closest("dialog"); if (d) { d.close(); } });
  });

  function reveal(opts) {
    var d = $("#reveal");
    $("#reveal-title").textContent = opts.title || "Done";
    $("#reveal-text").textContent = opts.text || "";
    var box = $("#reveal-keybox"), once = $("#reveal-once");
    if (opts.key) { $("#reveal-key").textContent = opts.key; box.hidden = false; once.hidden = false; }
    else { box.hidden = true; once.hidden = true; }
    var notes = $("#reveal-notes");
    notes.textContent = "";
    (opts.notes || []).forEach(function (n) { var li = document.createElement("li"); li.textContent = n; notes.appendChild(li); });
    notes.hidden = !(opts.notes && opts.notes.length);
    $all("dialog[open]").forEach(function (x) { if (x !== d) { x.close(); } });
    d.showModal();
    $("#reveal-done").focus();
  }
  var done = $("#reveal-done");
  if (done) {
    done.addEventListener("click", function () { location.reload(); });
    $("#reveal").addEventListener("cancel", function () { location.reload(); });
  }

  // --- form serialisation ---
  function collect(form) {
    var body = {}, els = form.elements;
    for (var i = 0; i < els.length; i++) {
      var el = els[i], name = el.name, type = el.getAttribute("data-type") || "";
      if (!name || el.disabled || type === "skip") { continue; }
      if (type === "bool") { body[name] = el.checked; continue; }
      if (type === "bool-value") { body[name] = el.value === "true"; continue; }
      var v = (el.value || "").trim();
      if (v === "") { continue; }
      if (type === "number") {
        var n = Number(v);
        if (!isFinite(n)) { throw new Error(fieldLabel(el) + " must be a number."); }
        body[name] = n;
      } else if (type === "list") {
        body[name] = v.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
      } else {
        body[name] = v;
      }
    }
    // Alert thresholds become metadata.max_budget_alert_emails, LiteLLM's shape.
    var pct = form.elements.alert_percents, to = form.elements.alert_emails;
    if (pct && pct.value.trim() !== "") {
      var emails = to ? to.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean) : [];
      var map = {};
      pct.value.split(",").forEach(function (p) {
        p = p.trim().replace(/%$/, "");
        if (p === "") { return; }
        var n = Number(p);
        if (!(n >= 1 && n <= 100) || Math.floor(n) !== n) { throw new Error("Alert percentages must be whole numbers from 1 to 100."); }
        map[String(n)] = emails;
      });
      if (body.max_budget === undefined) { throw new Error("Alert percentages need a max budget."); }
      body.metadata = { max_budget_alert_emails: map };
    }
    return body;
  }
  function fieldLabel(el) {
    var l = el.closest("label");
    var s = l && $("span", l);
    return s ? s.textContent : el.name;
  }

  function describe(form, body, res) {
    var then = form.getAttribute("data-then");
    var notes = (res && res.warnings) || [];
    if (form.getAttribute("data-api") === "/key/generate") {
      var owner = form.elements.user_id;
      var ownerText = owner && owner.value ? (owner.options[owner.selectedIndex].getAttribute("data-short") || owner.options[owner.selectedIndex].text) : "";
      if (body.send_invite_email && notes.length === 0) {
        notes = notes.concat(ownerText ? ["A key-created email is on its way to " + ownerText + "."] : ["Send Email was on, but the key has no owner to email."]);
      }
      return { title: "Key created", key: res.key, text: (body.key_alias ? "\u201c" + body.key_alias + "\u201d" : "The key") + (ownerText ? " belongs to " + ownerText + "." : " has no owner."), notes: notes };
    }
    if (form.getAttribute("data-api") === "/user/new") {
      if (body.send_invite_email && notes.length === 0 && body.user_email) {
        notes = ["An invitation email is on its way to " + body.user_email + ". They open the link to get their key."];
      }
      return { title: "User created", text: (body.user_email || res.user_id) + " was added.", notes: notes };
    }
    return { title: form.getAttribute("data-reveal-title") || "Done", key: res && res.key, notes: notes };
  }

  $all("form.api-form").forEach(function (form) {
    // An edit answers the error: it goes away until the next submit.
    form.addEventListener("input", function (ev) {
      hide($(".form-error", form));
      if (ev.target.classList) { ev.target.classList.remove("invalid"); ev.target.removeAttribute("aria-invalid"); }
    });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var errEl = $(".form-error", form), okEl = $(".form-ok", form);
      hide(errEl); hide(okEl);
      var required = $all("[required]", form).filter(function (el) { return el.value.trim() === ""; });
      if (required.length) { show(errEl, fieldLabel(required[0]) + " is required."); required[0].focus(); return; }
      var body;
      try { body = collect(form); } catch (e) { show(errEl, e.message); return; }
      var btn = $("button[type=submit]", form);
      if (btn) { btn.disabled = true; }
      api(form.getAttribute("data-api"), body).then(function (res) {
        if (btn) { btn.disabled = false; }
        var then = form.getAttribute("data-then");
        if (then === "inline") {
          show(okEl, "Sent through " + (res.backend || "the backend") + (res.provider_response ? ". Server answered: " + res.provider_response : "."));
          return;
        }
        if (then === "reveal" || then === "notice") { reveal(describe(form, body, res)); return; }
        location.reload();
      }).catch(function (e) {
        if (btn) { btn.disabled = false; }
        show(errEl, e.message);
        // The API names the field it refused: point at it.
        var param = e.data && e.data.error && e.data.error.param;
        var field = param && form.elements[param];
        if (field && field.classList) { field.classList.add("invalid"); field.setAttribute("aria-invalid", "true"); field.focus(); }
      });
    });
  });

  // --- action buttons, with an optional confirmation step ---
  var confirmDlg = $("#confirm");
  var pending = null;
  function runCall(b) {
    var body = {};
    var raw = b.getAttribute("data-json");
    if (raw) { body = JSON.parse(raw); }
    b.disabled = true;
    var okBtn = $("#confirm-ok");
    if (okBtn) { okBtn.disabled = true; }
    return api(b.getAttribute("data-call"), body).then(function (res) {
      var then = b.getAttribute("data-then") || "reload";
      if (then === "reveal") {
        reveal({ title: b.getAttribute("data-reveal-title") || "Done", key: res.key,
          text: "The previous key no longer works. Update your applications with this new key.", notes: res.warnings || [] });
      } else if (then.indexOf("go:") === 0) {
        location.assign(then.slice(3));
      } else {
        location.reload();
      }
    }).catch(function (e) {
      b.disabled = false;
      if (okBtn) { okBtn.disabled = false; }
      if (confirmDlg && confirmDlg.open) { show($("#confirm-error"), e.message); }
      else { pageError(e.message); }
    });
  }
  function pageError(msg) {
    var el = $("#page-error");
    if (!el) {
      el = document.createElement("p");
      el.id = "page-error";
      el.className = "form-error";
      el.setAttribute("role", "alert");
      var main = $("#main");
      main.insertBefore(el, main.firstChild);
    }
    show(el, msg);
  }
  $all("[data-call]").forEach(function (b) {
    b.addEventListener("click", function () {
      var q = b.getAttribute("data-confirm");
      if (!q || !confirmDlg) { runCall(b); return; }
      pending = b;
      $("#confirm-title").textContent = q;
      $("#confirm-text").textContent = b.getAttribute("data-confirm-text") || "";
      var ok = $("#confirm-ok");
      ok.textContent = b.getAttribute("data-confirm-label") || "Confirm";
      ok.className = "btn " + (b.id === "regenerate" ? "primary" : "danger");
      ok.disabled = false;
      hide($("#confirm-error"));
      confirmDlg.showModal();
    });
  });
  if (confirmDlg) {
    $("#confirm-cancel").addEventListener("click", function () { pending = null; confirmDlg.close(); });
    $("#confirm-ok").addEventListener("click", function () { if (pending) { runCall(pending); } });
  }

  // --- copy to clipboard (with a fallback for plain-http origins) ---
  $all("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var src = $(b.getAttribute("data-copy"));
      var text = src ? src.textContent : "";
      var label = b.textContent;
      function copied() { b.textContent = "Copied"; setTimeout(function () { b.textContent = label; }, 1600); }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(copied, fallback);
      } else { fallback(); }
      function fallback() {
        var r = document.createRange();
        r.selectNodeContents(src);
        var s = window.getSelection();
        s.removeAllRanges(); s.addRange(r);
        try { document.execCommand("copy"); copied(); } catch (e) { b.textContent = "Press Ctrl+C"; }
      }
    });
  });
})();
