// llm-monitor dashboard: local times, auto-refresh of the #live region, and the silence forms.
// Loaded as a static file (the CSP allows no inline script). Nothing here ever inserts server or
// user text as HTML: refreshed regions come from our own escaped pages, messages use textContent.
(function () {
  "use strict";

  var PAUSE_KEY = "llm-monitor.refresh-paused";
  var live = document.getElementById("live");
  var toggle = document.getElementById("refresh-toggle");
  var tzName = (Intl.DateTimeFormat().resolvedOptions().timeZone) || "local time";

  function fmtTime(d, withSeconds) {
    var opts = { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
    if (withSeconds) { opts.second = "2-digit"; }
    return d.toLocaleString(undefined, opts);
  }

  function fmtRelative(d) {
    var s = Math.round((Date.now() - d.getTime()) / 1000);
    var future = s < 0;
    s = Math.abs(s);
    var text;
    if (s < 5) { return "just now"; }
    if (s < 60) { text = s + " s"; }
    else if (s < 3600) { text = Math.floor(s / 60) + " min"; }
    else if (s < 86400) { text = Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min"; }
    else { text = Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h"; }
    return future ? "in " + text : text + " ago";
  }

  function tickLabel(d, span) {
    if (span <= 36 * 3600) {
      return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    }
    return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  }

  // Server pages carry UTC; show every time in the viewer's zone.
  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) { return; }
      el.title = fmtTime(d, true) + " (" + tzName + ")";
      el.textContent = el.hasAttribute("data-rel") ? fmtRelative(d) : fmtTime(d, false);
    });
    root.querySelectorAll("svg text[data-ts]").forEach(function (el) {
      var d = new Date(Number(el.getAttribute("data-ts")) * 1000);
      el.textContent = tickLabel(d, Number(el.getAttribute("data-span")));
    });
    root.querySelectorAll("svg circle[data-ts] > title").forEach(function (el) {
      var d = new Date(Number(el.parentNode.getAttribute("data-ts")) * 1000);
      var text = el.textContent;
      var at = text.lastIndexOf(" at ");
      if (at >= 0) { el.textContent = text.slice(0, at) + " at " + fmtTime(d, false); }
    });
  }

  function refreshRelative() {
    document.querySelectorAll("time[datetime][data-rel]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) { el.textContent = fmtRelative(d); }
    });
  }

  function stamp(ok) {
    var at = document.getElementById("updated-at");
    if (at) { at.textContent = ok ? new Date().toLocaleTimeString() : "failed, retrying"; }
  }

  // --- auto-refresh --------------------------------------------------------------------------------
  var periodS = live ? Number(live.getAttribute("data-refresh-s")) || 0 : 0;
  var paused = false;
  try { paused = window.localStorage.getItem(PAUSE_KEY) === "1"; } catch (e) { paused = false; }
  var inFlight = false;

  function showToggle() {
    if (!toggle) { return; }
    toggle.hidden = !periodS;
    toggle.setAttribute("aria-pressed", paused ? "false" : "true");
    toggle.textContent = paused ? "Auto-refresh paused" : "Auto-refresh " + periodS + " s";
  }

  function busy() {
    // Never pull a control out from under the user (the baseline picker lives in the live region).
    var el = document.activeElement;
    return !!(el && live.contains(el) && el.matches("select, input, textarea"));
  }

  function refresh() {
    if (!live || inFlight || busy()) { return Promise.resolve(); }
    inFlight = true;
    return fetch(window.location.href, { headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (resp) {
        if (!resp.ok) { throw new Error("HTTP " + resp.status); }
        return resp.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live");
        if (!fresh) { throw new Error("no #live in the page"); }
        live.replaceChildren.apply(live, Array.prototype.map.call(fresh.childNodes, function (n) {
          return document.importNode(n, true);
        }));
        var nav = document.querySelector(".top nav");
        var freshNav = doc.querySelector(".top nav");
        if (nav && freshNav) { nav.replaceWith(document.importNode(freshNav, true)); }
        localize(live);
        stamp(true);
      })
      .catch(function () { stamp(false); })
      .then(function () { inFlight = false; });
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      try { window.localStorage.setItem(PAUSE_KEY, paused ? "1" : "0"); } catch (e) { /* private mode */ }
      showToggle();
      if (!paused) { refresh(); }
    });
  }
  if (periodS > 0) {
    window.setInterval(function () {
      if (!paused && !document.hidden) { refresh(); }
    }, periodS * 1000);
  }
  window.setInterval(refreshRelative, 15000);

  // --- silences (alerts page) ------------------------------------------------------------------------
  var form = document.getElementById("silence-form");
  var msg = document.getElementById("form-msg");

  function say(text, ok) {
    if (!msg) { return; }
    msg.textContent = text;
    msg.className = "form-msg " + (ok ? "ok" : "err");
  }

  function token() {
    var input = document.getElementById("api-token");
    return input ? input.value.trim() : "";
  }

  function apiError(resp) {
    return resp.json().then(function (body) {
      return (body && body.error) ? body.error : "HTTP " + resp.status;
    }, function () { return "HTTP " + resp.status; });
  }

  function send(method, url, body) {
    var headers = { "Authorization": "Bearer " + token() };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    return fetch(url, {
      method: method, headers: headers, credentials: "omit", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body)
    });
  }

  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var data = new FormData(form);
      var matchers = {};
      ["alertname", "probe", "target"].forEach(function (name) {
        var value = String(data.get(name) || "").trim();
        if (value) { matchers[name] = value; }
      });
      if (!Object.keys(matchers).length) { say("Give a rule, a probe or a target to match.", false); return; }
      if (!token()) { say("Enter the API token.", false); return; }
      var body = {
        matchers: matchers,
        duration_s: Number(data.get("duration_s")),
        comment: String(data.get("comment") || ""),
        created_by: String(data.get("created_by") || "dashboard")
      };
      send("POST", form.getAttribute("data-api"), body).then(function (resp) {
        if (resp.status === 201) {
          return resp.json().then(function (silence) {
            say("Silence #" + silence.id + " added.", true);
            form.querySelector("input[name=comment]").value = "";
            return refresh();
          });
        }
        return apiError(resp).then(function (text) { say("Not added: " + text, false); });
      }).catch(function (err) { say("Not added: " + err.message, false); });
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) { return; }
    var expire = target.closest("[data-expire-silence]");
    if (expire && form) {
      var id = expire.getAttribute("data-expire-silence");
      if (!token()) { say("Enter the API token to expire silence #" + id + ".", false); document.getElementById("api-token").focus(); return; }
      send("DELETE", form.getAttribute("data-api") + "/" + encodeURIComponent(id)).then(function (resp) {
        if (resp.ok) { say("Silence #" + id + " expired.", true); return refresh(); }
        return apiError(resp).then(function (text) { say("Not expired: " + text, false); });
      }).catch(function (err) { say("Not expired: " + err.message, false); });
      return;
    }
    var silence = target.closest("[data-silence-alertname]");
    if (silence && form) {
      ["alertname", "probe", "target"].forEach(function (name) {
        form.querySelector("input[name=" + name + "]").value = silence.getAttribute("data-silence-" + name) || "";
      });
      form.scrollIntoView({ behavior: "smooth", block: "center" });
      form.querySelector("input[name=comment]").focus({ preventScroll: true });
    }
  });

  var tz = document.getElementById("tz");
  if (tz) { tz.textContent = "(" + tzName + ")"; }
  localize(document);
  showToggle();
  stamp(true);
}());
