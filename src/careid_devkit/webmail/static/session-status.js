// Notice a session ended elsewhere (back-channel logout: card removed, signed out in
// another service) while this page is open. Loaded as a static file: the CSP allows no
// inline script.
(function () {
  "use strict";
  var mailbox = document.getElementById("mailbox");
  var ended = document.getElementById("session-ended");
  if (!mailbox || !ended) {
    return;
  }
  var url = mailbox.getAttribute("data-status-url") || "/session-status";
  var seconds = parseInt(mailbox.getAttribute("data-poll-seconds"), 10) || 5;
  var timer = null;

  function showEnded() {
    window.clearInterval(timer);
    mailbox.hidden = true;
    ended.hidden = false;
    document.title = "Session ended — NHSmail-style webmail (demo)";
  }

  function check() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        if (!body) {
          return;
        }
        if (body.state === "ended") {
          showEnded();
        } else if (body.state === "signed_out") {
          // Signed out in another tab, or expired: let the server draw the page.
          window.clearInterval(timer);
          window.location.reload();
        }
      })
      .catch(function () {
        // The webmail is unreachable for a moment; the next poll tries again.
      });
  }

  timer = window.setInterval(check, seconds * 1000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      check();
    }
  });
})();
