/* One-time smartcard registration pages: this computer's checks (browser, agent), step
 * 2 (the card and PIN, the same challenge → agent → broker round as sign-in, bound to
 * this registration), and arming the session lock once registration has signed the
 * person in. Needs card-signin.js (window.CareIdCard), loaded first.
 */
(function () {
  "use strict";

  function registerText(key) {
    var node = document.querySelector('#register-texts [data-text="' + key + '"]');
    return node ? node.textContent.trim() : "";
  }

  function setCheck(item, state, message, link) {
    item.setAttribute("data-state", state);
    item.textContent = message;
    if (link && link.href && link.label) {
      var anchor = document.createElement("a");
      anchor.href = link.href;
      anchor.textContent = link.label;
      anchor.id = item.id + "-link";
      item.appendChild(document.createTextNode(" "));
      item.appendChild(anchor);
    }
  }

  function runChecks(card) {
    var list = document.getElementById("register-checks");
    if (!list) {
      return;
    }
    var browser = document.getElementById("check-browser");
    var agent = document.getElementById("check-agent");
    if (!card.supported()) {
      return; // the browser item already says what is missing
    }
    setCheck(browser, "ok", registerText("browser-ok"));
    setCheck(agent, "checking", registerText("agent-checking"));
    var agentUrl = (list.dataset.agentUrl || "").replace(/\/+$/, "");
    card.agentStatus(agentUrl).then(
      function (status) {
        var message = registerText("agent-ok");
        if (status.card && status.card.holderName) {
          message += " " + registerText("agent-card") + " " + status.card.holderName;
          if (status.card.uuid) {
            message += " (" + status.card.uuid + ")";
          }
          message += ".";
        } else if (status.cardError && status.cardError.message) {
          message += " " + status.cardError.message;
        } else {
          message += " " + registerText("agent-no-card");
        }
        setCheck(agent, "ok", message);
      },
      function (problem) {
        setCheck(agent, "problem", problem.message, {
          href: list.dataset.installUrl,
          label: card.text("install-link"),
        });
      }
    );
  }

  function bindCardStep(card) {
    var form = document.getElementById("register-card-form");
    if (!form || !card.supported()) {
      return;
    }
    var options = card.optionsFrom(form);
    var ui = new card.Ui(document.getElementById("register-card-button"));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (ui.isBusy()) {
        return;
      }
      card.keepSigning(null);
      card
        .cardRound(options, ui)
        .then(function (answer) {
          // The card session is handed to the agent on the last page, after the
          // confirmation: the handle naming this signing must reach that page.
          card.keepSigning(answer.agentSigning);
          window.location.assign(answer.redirect);
        })
        .catch(function (problem) {
          if (!(problem instanceof card.CardProblem)) {
            problem = new card.CardProblem(
              "broker_unreachable",
              card.messageFor("broker_unreachable")
            );
          }
          ui.show(problem, card.linksFor(problem, options.installUrl));
        });
    });
  }

  function armLock(card) {
    var done = document.getElementById("register-done");
    var status = document.getElementById("register-lock-status");
    if (!done || !status || !done.dataset.cardSession || !card.supported()) {
      return;
    }
    var options = {
      agentUrl: (done.dataset.agentUrl || "").replace(/\/+$/, ""),
      removedUrl: done.dataset.removedUrl || null,
    };
    var signing = card.takeSigning();
    // The session the confirmation started ends here if the agent did not take it.
    card.lockOrEnd(options, done.dataset.cardSession, signing).then(
      function () {
        status.setAttribute("data-state", "armed");
        status.textContent = registerText("lock-armed");
        status.hidden = false;
      },
      function (problem) {
        status.setAttribute("data-state", "not-armed");
        status.setAttribute("data-error-code", problem.code);
        status.textContent = problem.message;
        status.hidden = false;
      }
    );
  }

  function start() {
    var card = window.CareIdCard;
    if (!card) {
      return; // card-signin.js did not run: the page's fallback texts stay
    }
    runChecks(card);
    bindCardStep(card);
    armLock(card);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
