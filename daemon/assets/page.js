// onshi reception page: the few lines of script it needs (no framework; written here, not
// vendored, so the whole of it can be read at a glance).
// 1. The mode banner refreshes itself every second (GET /page/banner swaps the #banner element),
//    so a change shows within 2 s without reloading the page. A 401 means the session ended:
//    go to the sign-in page. If the edge does not answer, the old banner stays, marked stale.
// 2. Buttons with data-print print the page (inline handlers are forbidden by the CSP).
(function () {
  "use strict";
  var busy = false;
  function refresh() {
    var current = document.getElementById("banner");
    if (!current || busy) return;
    busy = true;
    fetch("/page/banner", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/login"); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (text) {
        if (text === null) { current.setAttribute("data-stale", "true"); return; }
        var t = document.createElement("template");
        t.innerHTML = text.trim();
        var fresh = t.content.firstElementChild;
        if (fresh && fresh.id === "banner") current.replaceWith(fresh);
      })
      .catch(function () { current.setAttribute("data-stale", "true"); })
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, 1000);
  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("[data-print]") : null;
    if (b) { e.preventDefault(); window.print(); }
  });
})();
