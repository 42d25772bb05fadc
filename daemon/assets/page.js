// onshi reception page: the few lines of script it needs (no framework; written here, not
// vendored, so the whole of it can be read at a glance).
// 1. The mode banner keeps itself current without reloading the page: it asks
//    GET /page/banner?mode=<the mode it shows>, which the edge answers as soon as the mode
//    changes or after 1 s, and swaps the #banner element; then asks again. A 401 means the
//    session ended: go to the sign-in page. If the edge does not answer, the old banner stays,
//    marked stale, and the script tries again a second later. With the banner, the check
//    page's #recent-cards (the last card checks at the readers) is fetched and swapped too.
// 2. Buttons with data-print print the page (inline handlers are forbidden by the CSP).
(function () {
  "use strict";
  // Replaces the element `id` with the same element from `url`, if the page has one.
  function swap(id, url) {
    if (!document.getElementById(id)) return null;
    return fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        var now = document.getElementById(id);
        if (text === null || !now) return;
        var t = document.createElement("template");
        t.innerHTML = text.trim();
        var fresh = t.content.firstElementChild;
        if (fresh && fresh.id === id) now.replaceWith(fresh);
      })
      .catch(function () { /* the old list stays; the banner's next round tries again */ });
  }
  function refresh() {
    var current = document.getElementById("banner");
    if (!current) return;
    var mode = current.getAttribute("data-mode") || "";
    var again = 0;
    fetch("/page/banner?mode=" + encodeURIComponent(mode),
          { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/login"); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (text) {
        var now = document.getElementById("banner");
        if (text === null) { if (now) now.setAttribute("data-stale", "true"); again = 1000; return; }
        var t = document.createElement("template");
        t.innerHTML = text.trim();
        var fresh = t.content.firstElementChild;
        if (now && fresh && fresh.id === "banner") now.replaceWith(fresh);
        return swap("recent-cards", "/page/cards");
      })
      .catch(function () {
        var now = document.getElementById("banner");
        if (now) now.setAttribute("data-stale", "true");
        again = 1000;
      })
      .then(function () { window.setTimeout(refresh, again); });
  }
  refresh();
  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("[data-print]") : null;
    if (b) { e.preventDefault(); window.print(); }
  });
})();
