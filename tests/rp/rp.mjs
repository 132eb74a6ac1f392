// An independent relying party: openid-client (panva) signs a user in at the broker.
//
//   node rp.mjs '{"issuer": "...", "clientId": "...", "clientSecret": "...",
//                 "redirectUri": "...", "mail": "...", "password": "..."}'
//
// openid-client does discovery, PKCE, the code exchange and every ID token check (issuer,
// audience, signature against the JWKS, nonce, RFC 9207 `iss` in the callback) and
// userinfo; this script only plays the browser in between: it follows the redirects,
// fills in the sign-in form with its CSRF token as a browser would, and prints JSON.
import * as client from "openid-client";

const settings = JSON.parse(process.argv[2]);

class Browser {
  constructor() {
    this.cookies = new Map();
  }

  remember(response) {
    const lines =
      typeof response.headers.getSetCookie === "function"
        ? response.headers.getSetCookie()
        : (response.headers.get("set-cookie") || "").split(/,(?=\s*[^;=\s]+=)/);
    for (const line of lines) {
      const [pair, ...attributes] = line.split(";");
      const index = pair.indexOf("=");
      if (index < 0) continue;
      const name = pair.slice(0, index).trim();
      const value = pair.slice(index + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === "";
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  async request(url, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (this.cookies.size) {
      headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
    }
    const response = await fetch(url, { ...options, headers, redirect: "manual" });
    this.remember(response);
    return response;
  }
}

function fail(message) {
  console.error(message);
  process.exit(1);
}

const issuer = new URL(settings.issuer);
const config = await client.discovery(issuer, settings.clientId, settings.clientSecret, undefined, {
  // The test broker runs on http://127.0.0.1; production issuers are https.
  execute: [client.allowInsecureRequests],
});

const codeVerifier = client.randomPKCECodeVerifier();
const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
const state = client.randomState();
const nonce = client.randomNonce();
const authorizationUrl = client.buildAuthorizationUrl(config, {
  redirect_uri: settings.redirectUri,
  scope: "openid profile email nationalrbacaccess",
  code_challenge: codeChallenge,
  code_challenge_method: "S256",
  state,
  nonce,
});

const browser = new Browser();
let response = await browser.request(authorizationUrl.href);
let location = response.headers.get("location");
if (response.status !== 302 || !location) fail(`authorize: HTTP ${response.status}`);
const loginUrl = new URL(location, issuer);
response = await browser.request(loginUrl.href);
const page = await response.text();
const csrf = /name="csrf_token" value="([^"]+)"/.exec(page);
if (!csrf) fail("no CSRF token on the sign-in page");
const form = new URLSearchParams({
  csrf_token: csrf[1].replaceAll("&#34;", '"').replaceAll("&amp;", "&"),
  tx: loginUrl.searchParams.get("tx"),
  email: settings.mail,
  password: settings.password,
});
response = await browser.request(new URL("/login", issuer).href, {
  method: "POST",
  headers: { "content-type": "application/x-www-form-urlencoded" },
  body: form.toString(),
});
// The sign-in's answer goes straight back to the RP with the code (303 See Other).
const callback = response.headers.get("location");
if (response.status !== 303 || !callback || !callback.startsWith(settings.redirectUri)) {
  fail(`sign-in: HTTP ${response.status}`);
}

const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
  pkceCodeVerifier: codeVerifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
});
const claims = tokens.claims();
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
console.log(
  JSON.stringify({
    token_type: tokens.token_type,
    scope: tokens.scope,
    id_token_claims: claims,
    userinfo,
    callback_iss: new URL(callback).searchParams.get("iss"),
  }),
);
