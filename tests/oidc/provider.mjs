// A real OpenID Provider (panva/oidc-provider) for Enclave's integration tests.
//
// Started by tests/oidc_provider.py with PORT and CONTROL_TOKEN in the environment; the issuer
// is http://127.0.0.1:PORT. Clients, the extra token claims of clients and of users (any login
// passes devInteractions; those in "users" get a tenant and groups), the console's client
// (authorization code + PKCE on a loopback redirect URI, and RP-initiated logout back to a
// loopback URI; rpInitiatedLogout is on by default) and the resource servers
// come from clients.json (which the Python harness reads too). Signing keys (RS256 + ES256)
// are generated here at start, never written to disk.
//
// Key rotation: POST /__test__/rotate (header x-control-token: CONTROL_TOKEN) builds a new
// Provider with fresh keys and swaps it in behind the same HTTP server, so the port and
// issuer stay the same. With ?keep_previous=1 the old public keys stay published (new keys
// sign); without it they are removed. The in-memory token store is lost on rotation.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';

import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const controlToken = process.env.CONTROL_TOKEN;
if (!port || !controlToken) throw new Error('PORT and CONTROL_TOKEN must be set');
const issuer = `http://127.0.0.1:${port}`;
const config = JSON.parse(readFileSync(new URL('./clients.json', import.meta.url), 'utf8'));
const claimsByClient = Object.fromEntries(
  config.confidential.map((c) => [c.client_id, c.claims]),
);
const claimsByUser = config.users;

// One private signing JWK with a fresh kid.
async function signingKey(alg) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: `${alg.toLowerCase()}-${randomUUID()}`, alg, use: 'sig' };
}

async function freshKeys() {
  return [await signingKey('RS256'), await signingKey('ES256')];
}

function buildProvider(keys) {
  return new Provider(issuer, {
    clients: [
      ...config.confidential.map((c) => ({
        client_id: c.client_id,
        client_secret: c.client_secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      })),
      {
        client_id: config.device.client_id,
        token_endpoint_auth_method: 'none',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
      // The compliance console: authorization code + PKCE, a public client. Native, so its
      // loopback redirect URI matches on any port (RFC 8252 7.3): test gateways listen on
      // free ports chosen after this provider started.
      {
        client_id: config.console.client_id,
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: [config.console.redirect_uri],
        post_logout_redirect_uris: [config.console.post_logout_redirect_uri],
      },
    ],
    jwks: { keys },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      deviceFlow: { enabled: true },
      devInteractions: { enabled: true }, // login forms (device flow, console); any user, any password
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined, // no resource asked for: an opaque token
        useGrantedResource: async () => true,
        // Every resource in clients.json is a resource server; its identifier is the audience.
        getResourceServerInfo: async (ctx, resource) => {
          const server = config.resources[resource];
          if (!server) throw new Provider.errors.InvalidTarget();
          if (server.format === 'opaque') {
            return { scope: 'enclave', audience: resource, accessTokenFormat: 'opaque' };
          }
          const alg = server.alg ?? 'RS256'; // signed with the first published key of this alg
          return { scope: 'enclave', audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg } } };
        },
      },
    },
    // Tenant and groups, as an IdP mapper would add them: the signed-in person's for tokens
    // issued to an account (the device flow), else the confidential client's own.
    extraTokenClaims: async (ctx, token) => (
      token.accountId ? claimsByUser[token.accountId] : claimsByClient[token.clientId]
    ),
    ttl: { ClientCredentials: 600 },
  });
}

let keys = await freshKeys();
let provider = buildProvider(keys);
let handler = provider.callback();

async function rotate(keepPrevious) {
  const next = await freshKeys();
  keys = keepPrevious ? [...next, ...keys.slice(0, 2)] : next; // first key of an alg signs
  provider = buildProvider(keys);
  handler = provider.callback();
  return keys.map((k) => ({ kid: k.kid, alg: k.alg }));
}

createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/__test__/rotate') {
    if (req.method !== 'POST' || req.headers['x-control-token'] !== controlToken) {
      res.writeHead(403).end();
      return;
    }
    const published = await rotate(url.searchParams.get('keep_previous') === '1');
    console.log('rotated keys:', JSON.stringify(published));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published }));
    return;
  }
  handler(req, res);
}).listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
