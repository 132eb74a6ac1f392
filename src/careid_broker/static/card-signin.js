/* Smartcard sign-in for the broker's pages (protocol careid-auth:1, DESIGN.md).
 *
 * The page asks the broker for a challenge, has the workstation agent sign it with the
 * card (the agent asks for the PIN), posts the agent's token back to the broker and
 * follows the redirect. After a card sign-in the card-session reference is handed to
 * the agent, which reports the card's removal to the broker (the session lock). If the
 * agent does not take it, the page ends that session itself and goes no further.
 *
 * No inline script anywhere (strict CSP): everything this file needs is in data-*
 * attributes and in the hidden #card-texts list the template renders, so all wording
 * stays in the broker's error registry. `window.CareIdCard` is shared with register.js.
 */
(function () {
  "use strict";

  var AGENT_STATUS_TIMEOUT_MS = 4000;
  // The agent waits for the PIN itself (and times out on its own); this only stops a
  // page from waiting forever on an agent that stopped answering.
  var AGENT_SIGN_TIMEOUT_MS = 180000;
  var AGENT_SESSION_TIMEOUT_MS = 5000;
  var BROKER_TIMEOUT_MS = 30000;
  var ERROR_PREFIX = "Error: ";
  // The agent names each signing with a handle in this response header; the page hands
  // it back with the card session so the agent keeps that session for the card that
  // signed, not for whichever card signed last.
  var SIGNING_HEADER = "CareId-Signing";
  var SIGNING_RE = /^[A-Za-z0-9_-]{16,64}$/;
  // Registration signs on one page and hands the card session over on a later one.
  var SIGNING_KEY = "careid-agent-signing";

  function supported() {
    return (
      typeof window.fetch === "function" &&
      typeof window.Promise === "function" &&
      typeof window.AbortController === "function" &&
      typeof window.JSON === "object" &&
      typeof document.querySelector === "function"
    );
  }

  /** A refusal to show: a stable code, the plain message, and any link to offer. */
  function CardProblem(code, message, extra) {
    this.code = code;
    this.message = message;
    this.extra = extra || {};
  }

  function text(key) {
    var node = document.querySelector('#card-texts [data-text="' + key + '"]');
    return node ? node.textContent.trim() : "";
  }

  function messageFor(code) {
    var node = document.querySelector('#card-texts [data-code="' + code + '"]');
    return node ? node.textContent.trim() : code;
  }

  function withTimeout(promiseFactory, ms) {
    var controller = new AbortController();
    var timer = window.setTimeout(function () {
      controller.abort();
    }, ms);
    return promiseFactory(controller.signal).finally(function () {
      window.clearTimeout(timer);
    });
  }

  function readJson(response) {
    return response.text().then(function (body) {
      try {
        return body ? JSON.parse(body) : {};
      } catch (ignored) {
        return {};
      }
    });
  }

  /** POST JSON to the broker (same origin, CSRF header); the answer or a CardProblem. */
  function postBroker(url, csrfToken, payload) {
    return withTimeout(function (signal) {
      return window.fetch(url, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRF-Token": csrfToken,
        },
        body: JSON.stringify(payload),
        signal: signal,
      });
    }, BROKER_TIMEOUT_MS).then(
      function (response) {
        return readJson(response).then(function (body) {
          if (response.ok) {
            return body;
          }
          var code = body.error || "request_invalid";
          throw new CardProblem(code, body.message || messageFor("broker_unreachable"), body);
        });
      },
      function () {
        throw new CardProblem("broker_unreachable", messageFor("broker_unreachable"));
      }
    );
  }

  /** A request to the agent on 127.0.0.1; its JSON, or a CardProblem with its code. */
  function callAgent(agentUrl, path, options, timeoutMs) {
    return withTimeout(function (signal) {
      var init = {
        method: options.method || "GET",
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
        signal: signal,
      };
      if (options.body !== undefined) {
        init.headers = { "Content-Type": "application/json" };
        init.body = JSON.stringify(options.body);
      }
      return window.fetch(agentUrl + path, init);
    }, timeoutMs).then(
      function (response) {
        return readJson(response).then(function (body) {
          if (response.ok) {
            if (options.header) {
              return { body: body, header: response.headers.get(options.header) };
            }
            return body;
          }
          var code = body.error || "agent_internal";
          var message = body.message || messageFor("agent_unreachable");
          // Our agent's message already counts the tries left; a third-party agent's
          // may not, so add the count only when the message does not carry it.
          if (
            typeof body.triesLeft === "number" &&
            code === "wrong_pin" &&
            message.indexOf(String(body.triesLeft)) === -1
          ) {
            message += " " + text("tries-left") + " " + body.triesLeft + ".";
          }
          throw new CardProblem(code, message, body);
        });
      },
      function () {
        // Refused connection, no agent, or an agent that does not allow this page's
        // origin (the browser hides which): all mean "the agent cannot be used here".
        throw new CardProblem("agent_unreachable", messageFor("agent_unreachable"));
      }
    );
  }

  function agentStatus(agentUrl) {
    return callAgent(agentUrl, "/v1/status", {}, AGENT_STATUS_TIMEOUT_MS);
  }

  /** Keep a signing handle for a later page of this tab (null clears it). */
  function keepSigning(signing) {
    try {
      if (signing) {
        window.sessionStorage.setItem(SIGNING_KEY, signing);
      } else {
        window.sessionStorage.removeItem(SIGNING_KEY);
      }
    } catch (ignored) {
      // Storage turned off: the agent then decides without the handle.
    }
  }

  /** The handle an earlier page of this tab kept, removed as it is taken (or null). */
  function takeSigning() {
    try {
      var signing = window.sessionStorage.getItem(SIGNING_KEY);
      window.sessionStorage.removeItem(SIGNING_KEY);
      return signing && SIGNING_RE.test(signing) ? signing : null;
    } catch (ignored) {
      return null;
    }
  }

  /** The agent's token, and the handle naming this signing (null from an agent too old
   * to give one). The token goes to the broker as it is; the handle only back to the
   * agent, with the card session, so that session is kept for the card that signed. */
  function agentSign(agentUrl, challenge) {
    return callAgent(
      agentUrl,
      "/v1/authenticate",
      { method: "POST", body: { challenge: challenge }, header: SIGNING_HEADER },
      AGENT_SIGN_TIMEOUT_MS
    ).then(function (answer) {
      var handle = answer.header;
      return { token: answer.body, signing: handle && SIGNING_RE.test(handle) ? handle : null };
    });
  }

  /** Hand the card-session reference (and the signing handle, when there is one) to the
   * agent; true when it took it. */
  function armSessionLock(agentUrl, cardSession, signing) {
    function post(body) {
      return callAgent(
        agentUrl,
        "/v1/card-sessions",
        { method: "POST", body: body },
        AGENT_SESSION_TIMEOUT_MS
      );
    }
    var body = { cardSession: cardSession };
    if (signing) {
      body.signing = signing;
    }
    return post(body)
      .catch(function (problem) {
        // An agent older than the signing handle refuses a member it does not know:
        // ask once more as it expects. (A current agent never answers bad_request to a
        // well-formed body, so this cannot undo its refusal of a handle.)
        if (signing && problem instanceof CardProblem && problem.code === "bad_request") {
          return post({ cardSession: cardSession });
        }
        throw problem;
      })
      .then(
        function () {
          return true;
        },
        function () {
          return false;
        }
      );
  }

  /** The session lock could not be set up: end the sign-in the page has just made, as
   * the agent would on the card's removal (`POST /card/removed`, which needs no cookie
   * or CSRF token: the card-session reference is its only credential). The problem to
   * show: signed out, or (the broker could not be told) perhaps still signed in. */
  function endUnlocked(removedUrl, cardSession) {
    function problem(ended) {
      var code = ended ? "card_lock_not_armed" : "card_lock_not_armed_signed_in";
      return new CardProblem(code, messageFor(code));
    }
    return withTimeout(function (signal) {
      return window.fetch(removedUrl || "/card/removed", {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { "Content-Type": "application/json" },
        // Said so, for the broker to record it as such rather than as a card removal.
        body: JSON.stringify({ cardSession: cardSession, lockNotArmed: true }),
        signal: signal,
      });
    }, BROKER_TIMEOUT_MS).then(
      function (response) {
        // 204 whatever it names; 429 only for a report that ended nothing, so the
        // session is not open either way. Anything else: it may still be open.
        return problem(response.ok || response.status === 429);
      },
      function () {
        return problem(false);
      }
    );
  }

  /** Hand the card session to the agent; if it did not take it, end the sign-in and
   * reject with the problem to show (fail closed: no session without its lock). */
  function lockOrEnd(options, cardSession, signing) {
    return armSessionLock(options.agentUrl, cardSession, signing).then(function (armed) {
      if (armed) {
        return true;
      }
      return endUnlocked(options.removedUrl, cardSession).then(function (problem) {
        throw problem;
      });
    });
  }

  /** The status line, the error box and the button of one card area. */
  function Ui(button) {
    this.button = button;
    this.status = document.getElementById("card-status");
    this.error = document.getElementById("card-error");
    this.errorMessage = document.getElementById("card-error-message");
    this.errorAction = document.getElementById("card-error-action");
    this.errorLink = document.getElementById("card-error-link");
  }

  // While waiting (the PIN prompt is up) the button says so and refuses a second
  // press, but stays focusable: `disabled` would drop keyboard focus to the page.
  Ui.prototype.isBusy = function () {
    return Boolean(this.button) && this.button.getAttribute("aria-disabled") === "true";
  };

  Ui.prototype.busy = function (key) {
    if (this.button) {
      this.button.setAttribute("aria-disabled", "true");
      this.button.classList.add("button-waiting");
    }
    this.error.hidden = true;
    if (document.title.indexOf(ERROR_PREFIX) === 0) {
      document.title = document.title.slice(ERROR_PREFIX.length);
    }
    this.status.textContent = text(key);
    this.status.hidden = false;
  };

  Ui.prototype.idle = function () {
    if (this.button) {
      this.button.removeAttribute("aria-disabled");
      this.button.classList.remove("button-waiting");
    }
    this.status.hidden = true;
  };

  Ui.prototype.show = function (problem, links) {
    this.idle();
    this.error.setAttribute("data-error-code", problem.code);
    this.errorMessage.textContent = problem.message;
    var link = (links || {})[problem.code];
    if (link && link.href) {
      this.errorLink.href = link.href;
      this.errorLink.textContent = link.label;
      this.errorAction.hidden = false;
    } else {
      this.errorAction.hidden = true;
    }
    this.error.hidden = false;
    // As on the server's error pages: the title is the first thing a screen reader says.
    if (document.title.indexOf(ERROR_PREFIX) !== 0) {
      document.title = ERROR_PREFIX + document.title;
    }
    this.error.focus();
  };

  /** The links offered with a refusal (install help, registration, the AUP). */
  function linksFor(problem, installUrl) {
    var agentHelp = { href: installUrl, label: text("install-link") };
    var links = {
      agent_unreachable: agentHelp,
      card_lock_not_armed: agentHelp,
      card_lock_not_armed_signed_in: agentHelp,
      // The page's form token was spent elsewhere (a sign-in, a sign-out or a password
      // in another tab): the same page again carries a current one.
      csrf_invalid: { href: window.location.href, label: text("reload-link") },
    };
    if (problem.extra.register) {
      links[problem.code] = { href: problem.extra.register, label: text("register-link") };
    } else if (problem.extra.aup) {
      links[problem.code] = { href: problem.extra.aup, label: text("aup-link") };
    }
    return links;
  }

  /** One challenge → agent signature → broker check round; the broker's answer. */
  function cardRound(options, ui) {
    ui.busy("preparing");
    return postBroker(options.challengeUrl, options.csrfToken, { tx: options.tx || null })
      .then(function (issued) {
        ui.busy("pin");
        return agentSign(options.agentUrl, issued.challenge).then(function (signed) {
          ui.busy("checking");
          return postBroker(options.authenticateUrl, options.csrfToken, {
            tx: options.tx || null,
            // A registration page names its step; left out (undefined) elsewhere.
            step: options.step || undefined,
            challenge: issued.challenge,
            token: signed.token,
          }).then(function (answer) {
            answer.agentSigning = signed.signing;
            return answer;
          });
        });
      });
  }

  function optionsFrom(element) {
    var data = element.dataset;
    return {
      agentUrl: (data.agentUrl || "").replace(/\/+$/, ""),
      installUrl: data.installUrl,
      challengeUrl: data.challengeUrl,
      authenticateUrl: data.authenticateUrl,
      csrfToken: data.csrfToken,
      tx: data.tx || null,
      step: data.step || null,
      sessionLock: data.sessionLock === "true",
      removedUrl: data.removedUrl || null,
    };
  }

  function bindLoginForm() {
    var form = document.getElementById("card-signin-form");
    if (!form || !form.dataset.challengeUrl) {
      return; // card sign-in is off: the button leads to the explanation page
    }
    if (!supported()) {
      return; // the button's plain GET explains what the browser lacks
    }
    var options = optionsFrom(form);
    var ui = new Ui(document.getElementById("card-signin-button"));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (ui.isBusy()) {
        return;
      }
      cardRound(options, ui)
        .then(function (answer) {
          ui.busy("signed-in");
          // Never on to the web app with a session its card cannot end.
          var armed = answer.cardSession
            ? lockOrEnd(options, answer.cardSession, answer.agentSigning)
            : Promise.resolve(true);
          return armed.then(function () {
            window.location.assign(answer.redirect);
          });
        })
        .catch(function (problem) {
          if (!(problem instanceof CardProblem)) {
            problem = new CardProblem("broker_unreachable", messageFor("broker_unreachable"));
          }
          ui.show(problem, linksFor(problem, options.installUrl));
        });
    });
  }

  window.CareIdCard = {
    supported: supported,
    CardProblem: CardProblem,
    Ui: Ui,
    text: text,
    messageFor: messageFor,
    agentStatus: agentStatus,
    armSessionLock: armSessionLock,
    lockOrEnd: lockOrEnd,
    keepSigning: keepSigning,
    takeSigning: takeSigning,
    cardRound: cardRound,
    linksFor: linksFor,
    optionsFrom: optionsFrom,
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", bindLoginForm);
  } else {
    bindLoginForm();
  }
})();
