// A relying party configured the way NHS CIS2 Authentication's integration guidance
// tells one to be, written with openid-client (panva) and nothing of the broker's:
// a confidential client authenticating with private_key_jwt, PKCE, the scopes
// `openid profile nhsperson nationalrbacaccess associatedorgs selectedrole`,
// `acr_values=AAL3_ANY` and `max_age`. A browser (Chromium, in the tests) visits it.
//
//   node cis2_rp.mjs '{"issuer": "...", "clientId": "...", "port": 0,
//                      "redirectUri": "http://localhost:PORT/callback",
//                      "privateJwk": {...EC P-256 private JWK with kid...}}'
//
// GET /start sends the browser to the broker; GET /callback redeems the code (openid-
// client checks the ID token: signature against the JWKS, iss, aud, nonce, auth_time
// against max_age, RFC 9207 `iss`), fetches userinfo and checks every claim this RP
// reads. The page and one JSON line on stdout say what it found.
import * as http from "node:http";
import * as client from "openid-client";

const settings = JSON.parse(process.argv[2]);
const SCOPE = "openid profile nhsperson nationalrbacaccess associatedorgs selectedrole";
const ACR_VALUES = "AAL3_ANY";
const MAX_AGE = 3600;

const jwk = settings.privateJwk;
const key = await crypto.subtle.importKey(
  "jwk",
  jwk,
  { name: "ECDSA", namedCurve: "P-256" },
  false,
  ["sign"],
);
const config = await client.discovery(
  new URL(settings.issuer),
  settings.clientId,
  { id_token_signed_response_alg: "RS256" },
  client.PrivateKeyJwt({ key, kid: jwk.kid }),
  // The demo broker runs on http://localhost; production issuers are https.
  { execute: [client.allowInsecureRequests] },
);

const pending = new Map(); // state -> { verifier, nonce }

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// What this RP relies on, as a CIS2 integration guide describes the claims.
function checkClaims(claims, userinfo) {
  check(
    ["AAL3_SMARTCARD", "AAL3_ANY"].includes(claims.acr),
    `acr ${claims.acr} is not AAL3`,
  );
  check(claims.authentication_assurance_level === "3", "authentication_assurance_level is not 3");
  check(Array.isArray(claims.amr) && claims.amr.includes("sc"), "amr has no smartcard");
  check(Number.isInteger(claims.auth_time), "no auth_time");
  check(typeof claims.sid === "string" && claims.sid.length > 0, "no sid");
  check(typeof claims.nhsid_useruid === "string", "no nhsid_useruid in the ID token");
  check(userinfo.sub === claims.sub, "userinfo is about someone else");
  check(userinfo.nhsid_useruid === claims.nhsid_useruid, "userinfo UUID differs");
  const roles = userinfo.nhsid_nrbac_roles;
  check(Array.isArray(roles) && roles.length > 0, "no nhsid_nrbac_roles");
  const selected = roles.find((role) => role.person_roleid === claims.selected_roleid);
  check(selected, `selected_roleid ${claims.selected_roleid} is not one of the roles`);
  check(userinfo.selected_roleid === claims.selected_roleid, "userinfo selected_roleid differs");
  check(claims.selected_role_org_code === selected.org_code, "selected role's organisation");
  const orgs = (userinfo.nhsid_user_orgs || []).map((org) => org.org_code);
  check(orgs.includes(selected.org_code), "the selected role's organisation is not associated");
  return selected;
}

function page(response, status, title, body) {
  response.writeHead(status, { "content-type": "text/html; charset=utf-8" });
  response.end(
    `<!DOCTYPE html><html lang="en-GB"><head><title>${title}</title></head>` +
      `<body><h1 id="result">${title}</h1>${body}</body></html>`,
  );
}

function escape(text) {
  return String(text).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

const server = http.createServer(async (request, response) => {
  const url = new URL(request.url, settings.redirectUri);
  try {
    if (url.pathname === "/start") {
      const verifier = client.randomPKCECodeVerifier();
      const state = client.randomState();
      const nonce = client.randomNonce();
      pending.set(state, { verifier, nonce });
      const target = client.buildAuthorizationUrl(config, {
        redirect_uri: settings.redirectUri,
        scope: SCOPE,
        acr_values: ACR_VALUES,
        max_age: String(MAX_AGE),
        code_challenge: await client.calculatePKCECodeChallenge(verifier),
        code_challenge_method: "S256",
        state,
        nonce,
      });
      response.writeHead(302, { location: target.href });
      response.end();
      return;
    }
    if (url.pathname === "/callback") {
      const state = url.searchParams.get("state");
      const saved = pending.get(state);
      check(saved, "unknown state");
      pending.delete(state);
      const tokens = await client.authorizationCodeGrant(config, url, {
        pkceCodeVerifier: saved.verifier,
        expectedState: state,
        expectedNonce: saved.nonce,
        maxAge: MAX_AGE,
        idTokenExpected: true,
      });
      const claims = tokens.claims();
      const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
      const selected = checkClaims(claims, userinfo);
      const outcome = { ok: true, id_token_claims: claims, userinfo, selected_role: selected };
      console.log(JSON.stringify(outcome));
      page(
        response,
        200,
        "Signed in",
        `<p id="selected-role">${escape(selected.role_name)} at ${escape(selected.org_code)}</p>` +
          `<pre id="outcome">${escape(JSON.stringify(outcome))}</pre>`,
      );
      return;
    }
    page(response, 404, "Not found", "");
  } catch (error) {
    console.log(JSON.stringify({ ok: false, error: String(error && error.message) }));
    page(response, 500, "Sign-in failed", `<pre id="error">${escape(error && error.message)}</pre>`);
  }
});

server.listen(settings.port, "127.0.0.1", () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});
