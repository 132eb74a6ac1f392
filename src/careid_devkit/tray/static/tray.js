// The card tray's buttons: JSON POSTs with the X-Card-Tray header (the tray refuses a POST
// without it, so another site cannot press them), then redraw from the answer. Loaded as
// a static file: the CSP allows no inline script.
(function () {
  "use strict";
  var tray = document.getElementById("tray");
  if (!tray) {
    return;
  }
  var header = tray.getAttribute("data-header") || "X-Card-Tray";
  var statusLine = document.getElementById("tray-status");
  var removeButton = document.getElementById("remove-card");
  var readerCard = document.getElementById("reader-card");
  var busy = false;

  function say(text) {
    statusLine.textContent = text;
  }

  function draw(state) {
    var inserted = null;
    state.cards.forEach(function (card) {
      var row = document.querySelector('tr[data-card="' + card.id + '"]');
      if (!row) {
        return;
      }
      var button = row.querySelector("button.insert");
      var pin = row.querySelector('[data-field="pin"]');
      row.classList.toggle("inserted", card.inserted);
      button.disabled = busy || card.inserted;
      button.textContent = card.inserted ? "In the reader" : "Insert";
      if (card.pinBlocked) {
        pin.textContent = "PIN blocked";
      } else if (card.pinTriesLeft === null) {
        pin.textContent = "unknown";
      } else {
        pin.textContent = String(card.pinTriesLeft);
      }
      if (card.inserted) {
        inserted = card;
      }
    });
    readerCard.textContent = inserted ? inserted.name + " (" + inserted.id + ")" : "No card";
    removeButton.disabled = busy || !inserted;
  }

  function request(method, url) {
    var options = { method: method, credentials: "same-origin", cache: "no-store", headers: {} };
    if (method === "POST") {
      options.headers[header] = "1";
      options.headers["Content-Type"] = "application/json";
      options.body = "{}";
    }
    return fetch(url, options).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) {
          throw new Error(body.message || "The tray refused the request.");
        }
        return body;
      });
    });
  }

  function act(url, doing, done) {
    busy = true;
    say(doing);
    document.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    request("POST", url)
      .then(function (state) {
        busy = false;
        draw(state);
        say(done(state));
      })
      .catch(function (error) {
        busy = false;
        say(error.message);
        refresh();
      });
  }

  function refresh() {
    request("GET", "/cards").then(draw).catch(function () {
      say("The card tray is not answering. Is the demo still running?");
    });
  }

  document.querySelectorAll("button.insert").forEach(function (button) {
    button.addEventListener("click", function () {
      var id = button.getAttribute("data-card");
      act("/cards/" + encodeURIComponent(id) + "/insert", "Inserting the card…", function (state) {
        return "Inserted " + id + " into " + state.reader + ".";
      });
    });
  });
  removeButton.addEventListener("click", function () {
    act("/cards/remove", "Removing the card…", function (state) {
      return state.removed ? "Removed " + state.removed + "." : "The reader was empty.";
    });
  });
  // Cards also move by the JSON API (tests, scripts): keep the page up to date.
  window.setInterval(function () {
    if (!busy) {
      refresh();
    }
  }, 2000);
})();
