// Keeps the status header current without reloading the page: polls /api/status
// and, when the server's state changed, fetches this page again and swaps in its
// header (and its tabs and content when the role or state changed). Optional: the
// pages work without it.
(function () {
  "use strict";
  var INTERVAL = 5000;
  var last = null;

  function summary(s) {
    var p = s.peer || {};
    return JSON.stringify([s.role, s.state, s.primary, s.failover, p.name, p.address,
      p.alive, p.in_sync, p.last_sync, p.link, p.problem, p.state_since, s.cut_off_since]);
  }

  function swap(doc, id) {
    var now = document.getElementById(id), fresh = doc.getElementById(id);
    if (now && fresh) { now.replaceWith(document.adoptNode(fresh)); }
  }

  function refresh(whole) {
    fetch(location.href, { credentials: "same-origin", headers: { "X-Background": "1" } })
      .then(function (r) { return r.ok || r.status === 409 ? r.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        swap(doc, "status-header");
        if (whole) { swap(doc, "tabs"); swap(doc, "content"); }
      })
      .catch(function () {});
  }

  function poll() {
    fetch("/api/status", { credentials: "same-origin", headers: { "X-Background": "1" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) { return; }
        var header = document.getElementById("status-header");
        var key = summary(s);
        if (last !== null && key !== last) {
          var moved = header && (header.dataset.role !== s.role || header.dataset.state !== s.state);
          refresh(moved);
        }
        last = key;
      })
      .catch(function () {});
  }

  if (document.getElementById("tabs")) {
    poll();
    setInterval(poll, INTERVAL);
  }
})();
