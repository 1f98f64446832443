/*
 * popproxy console: the administrators' overview refreshes its panels.
 * Every element with data-live="/admin/live/PANEL" is fetched again every
 * data-every seconds (same origin, the session's cookie) while the page
 * is visible; the answer's "html" (drawn and escaped by the server's
 * templates) replaces the element's content.  Signed out: back to the
 * sign-in form.  No inline script anywhere: the Content-Security-Policy
 * allows only this file.
 */
"use strict";
(function () {
  function refresh(element) {
    if (document.hidden || element.getAttribute("data-busy") === "1") {
      return;
    }
    element.setAttribute("data-busy", "1");
    fetch(element.getAttribute("data-live"), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Accept": "application/json" },
    })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          window.location.assign("/admin/signin");
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (answer) {
        if (answer && typeof answer.html === "string") {
          element.innerHTML = answer.html;
          var count = Number(element.getAttribute("data-refreshed") || "0") + 1;
          element.setAttribute("data-refreshed", String(count));
        }
      })
      .catch(function () {
        element.setAttribute("data-stale", "1");
      })
      .finally(function () {
        element.removeAttribute("data-busy");
      });
  }

  function start() {
    var elements = document.querySelectorAll("[data-live]");
    elements.forEach(function (element) {
      var seconds = Math.max(2, Number(element.getAttribute("data-every")) || 10);
      window.setInterval(function () { refresh(element); }, seconds * 1000);
    });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        elements.forEach(refresh);
      }
    });
  }

  start();
})();
