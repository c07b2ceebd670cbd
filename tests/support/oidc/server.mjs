// A real OpenID Provider (oidc-provider) for the archive's sign-in tests: tests/support/oidc.py
// starts it with `node server.mjs CONFIG.json` (or the JSON in $OIDC_PROVIDER_CONFIG).
//
// The configuration (every key but issuer, port, clients and jwks is optional):
//   { host, port, issuer,                      plain http on loopback: no TLS, no proxy
//     resources: [{ audience, scope }],        resource servers; the first is the default one
//     access_token_ttl,                        seconds, for every client without its own
//     tenants_claim,                           name of the tenants claim ("tenants")
//     cookie_keys: [secret],                   signs the provider's cookies
//     clients: [client metadata + { tenants, extra_claims, access_token_ttl, test_claims }],
//     accounts: { username: { password, name, email, tenants, extra_claims } },
//     jwks: { keys: [private JWK] } }          signing keys, each with kid and alg; the first
//                                              signs access tokens
//
// Access tokens are JWTs for the resource server (resourceIndicators with accessTokenFormat
// 'jwt'), carrying scope, the tenants claim (from the account for a signed-in user, from the
// client for client credentials; absent where not configured) and any extra_claims.
//
// On plain http a browser signs in as on https: oidc-provider marks its cookies Secure only
// for https requests, and loopback is a secure context for PKCE's Web Crypto in the browser.
// oidc-provider 9 warns that it wants Node.js 22 LTS; it runs on Node.js 20 as tested here.
//
// Besides the provider's own endpoints:
//   GET/POST /interaction/:uid[/login]  a minimal login page: username and password of one of
//                                       the accounts; consent is given without asking
//   POST /__test__/keys {keys, retire}  puts `keys` (private JWKs) in front of the signing keys,
//                                       so new tokens carry their kid at once, without a
//                                       restart; with retire: true the older keys are dropped
//                                       from the JWKS too. Answers the public JWKS.
// and, for clients with test_claims: true, the token endpoint takes two more parameters:
//   tenants       JSON: the tenants claim of this token as given (a list, a string), or null
//                 for no claim at all
//   extra_claims  JSON object: more claims for this token
// so that a test gets any combination without configuring a client for each.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import * as querystring from 'node:querystring';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(
  process.argv[2] ? readFileSync(process.argv[2], 'utf8') : process.env.OIDC_PROVIDER_CONFIG,
);
const host = config.host ?? '127.0.0.1';
const resources = config.resources ?? [
  { audience: 'https://pacs.test/dicomweb', scope: 'pacs:read pacs:write pacs:delete pacs:admin' },
];
const tenantsClaim = config.tenants_claim ?? 'tenants';
const accounts = config.accounts ?? {};
const OURS = ['tenants', 'extra_claims', 'access_token_ttl', 'test_claims'];
// Our settings of each client, apart from its OAuth metadata.
const clientSettings = new Map(
  config.clients.map((c) => [c.client_id, Object.fromEntries(OURS.map((k) => [k, c[k]]))]),
);
const clients = config.clients.map((c) =>
  Object.fromEntries(Object.entries(c).filter(([k]) => !OURS.includes(k))),
);
let signingKeys = checkKeys(config.jwks.keys);

function checkKeys(keys) {
  for (const key of keys) {
    if (!key.kid || !key.alg) throw new Error(`a signing key needs a kid and an alg: ${key.kid}`);
  }
  return keys;
}

function accessTokenTTL(_ctx, _token, client) {
  return clientSettings.get(client.clientId)?.access_token_ttl ?? config.access_token_ttl ?? 300;
}

function configuration() {
  return {
    clients,
    jwks: { keys: signingKeys },
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: signingKeys[0].alg, // ID tokens too, with the first key
    },
    findAccount(_ctx, sub) {
      const account = accounts[sub];
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, name: account.name ?? sub, preferred_username: sub, email: account.email };
        },
      };
    },
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email'] },
    scopes: [
      ...new Set([
        ...['openid', 'profile', 'email', 'offline_access'],
        ...resources.flatMap((r) => r.scope.split(' ')),
      ]),
    ],
    cookies: { keys: config.cookie_keys ?? ['pacs-test-provider'] },
    features: {
      devInteractions: { enabled: false }, // our own login page below checks passwords
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx, _client, oneOf) => oneOf ?? resources[0].audience,
        useGrantedResource: () => true,
        getResourceServerInfo(_ctx, indicator) {
          const resource = resources.find((r) => r.audience === indicator);
          if (!resource) throw new errors.InvalidTarget();
          return {
            audience: resource.audience,
            scope: resource.scope,
            accessTokenFormat: 'jwt',
            // The first signing key signs, whatever keys are behind it.
            jwt: { sign: { alg: signingKeys[0].alg, kid: signingKeys[0].kid } },
          };
        },
      },
    },
    extraTokenClaims(ctx, token) {
      const settings = clientSettings.get(token.clientId) ?? {};
      const account = token.accountId ? accounts[token.accountId] : undefined;
      const claims = { ...settings.extra_claims, ...account?.extra_claims };
      const tenants = account ? account.tenants : settings.tenants;
      if (tenants !== undefined) claims[tenantsClaim] = tenants;
      const asked = ctx?.req?.testClaims;
      if (asked?.tenants !== undefined) {
        if (asked.tenants === null) delete claims[tenantsClaim];
        else claims[tenantsClaim] = asked.tenants;
      }
      return { ...claims, ...asked?.extra_claims };
    },
    ttl: {
      AccessToken: accessTokenTTL,
      ClientCredentials: accessTokenTTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 3600,
    },
    // Browser clients (public, with PKCE) may call the token endpoint from their own origin.
    clientBasedCORS(_ctx, origin, client) {
      return client.redirectUris.some((uri) => URL.parse(uri)?.origin === origin);
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Sign-in error', `<pre>${escape(JSON.stringify(out, null, 2))}</pre>`);
    },
  };
}

// A new Provider on the same port and the same in-memory store (oidc-provider's memory adapter
// is one per process), so sessions, grants and issued tokens survive a key rotation.
let provider;
let handle;
function build() {
  provider = new Provider(config.issuer, configuration());
  handle = provider.callback();
}
build();

// --- the login page ----------------------------------------------------------------------------

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  // No favicon: the browser would ask for /favicon.ico and log the 404 as a page error.
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escape(title)}</title>
<link rel="icon" href="data:,"></head>
<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function loginForm(uid, clientId, error) {
  return page(
    'Sign in',
    `<p>to ${escape(clientId)}</p>${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
  <label>Username <input name="username" autocomplete="username" required autofocus></label>
  <label>Password
    <input name="password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Sign in</button>
</form>`,
  );
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

async function interaction(req, res, path) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session, grantId } = details;
  if (req.method === 'POST' && path.endsWith('/login')) {
    const form = querystring.parse(await readBody(req));
    const account = accounts[form.username];
    if (!account || account.password !== form.password) {
      send(res, 401, 'text/html', loginForm(uid, params.client_id, 'Wrong username or password'));
      return;
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: form.username } },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  if (prompt.name === 'login') {
    send(res, 200, 'text/html', loginForm(uid, params.client_id));
    return;
  }
  // Consent: the test clients are the archive's own, so everything asked for is granted.
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
  if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
  if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const consent = { grantId: await grant.save() };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

// --- test-only parameters and key rotation -----------------------------------------------------

function parseJson(value, name) {
  try {
    return JSON.parse(value);
  } catch {
    throw new Error(`${name} is not JSON: ${value}`);
  }
}

// Takes tenants and extra_claims out of a token request (the provider would drop them) and
// hands the rest on already parsed, which oidc-provider accepts.
async function tokenRequest(req) {
  const body = querystring.parse(await readBody(req));
  const asked = {};
  if (body.tenants !== undefined) asked.tenants = parseJson(body.tenants, 'tenants');
  if (body.extra_claims !== undefined) {
    asked.extra_claims = parseJson(body.extra_claims, 'extra_claims');
  }
  delete body.tenants;
  delete body.extra_claims;
  if (Object.keys(asked).length > 0) {
    const clientId = body.client_id ?? basicClientId(req.headers.authorization);
    if (!clientSettings.get(clientId)?.test_claims) {
      throw new Error(`client ${clientId} may not ask for tenants or extra_claims`);
    }
    req.testClaims = asked;
  }
  req.body = body;
}

function basicClientId(authorization) {
  if (!authorization?.startsWith('Basic ')) return undefined;
  const [id] = Buffer.from(authorization.slice(6), 'base64').toString('utf8').split(':');
  return decodeURIComponent(id);
}

async function rotate(req, res) {
  const { keys, retire = false } = JSON.parse(await readBody(req));
  checkKeys(keys);
  const previous = signingKeys;
  const kept = retire ? [] : previous.filter((k) => !keys.some((n) => n.kid === k.kid));
  signingKeys = [...keys, ...kept];
  try {
    build();
  } catch (error) {
    signingKeys = previous;
    build();
    throw error;
  }
  const jwks = await (await fetch(`${config.issuer}/jwks`)).json();
  send(res, 200, 'application/json', JSON.stringify(jwks));
}

const server = createServer(async (req, res) => {
  const path = new URL(req.url, config.issuer).pathname;
  try {
    if (path === '/__test__/keys' && req.method === 'POST') {
      await rotate(req, res);
      return;
    }
    if (path.startsWith('/interaction/')) {
      await interaction(req, res, path);
      return;
    }
    const form = req.headers['content-type']?.startsWith('application/x-www-form-urlencoded');
    if (path === '/token' && req.method === 'POST' && form) {
      await tokenRequest(req);
    }
  } catch (error) {
    console.error(error);
    if (!res.headersSent) {
      const status = error instanceof errors.OIDCProviderError ? error.statusCode : 400;
      const body = { error: 'invalid_request', error_description: String(error.message) };
      send(res, status, 'application/json', JSON.stringify(body));
    }
    return;
  }
  handle(req, res);
});
server.listen(config.port, host, () => {
  console.log(`oidc-provider ${config.issuer} listening on ${host}:${server.address().port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
