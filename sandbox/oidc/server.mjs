// A certified OpenID Connect provider (the npm package oidc-provider) on 127.0.0.1, for the tests of
// `python -m integration_platform.oauth_login` and of the oauth2_refresh_token auth. Its development
// interactions accept any login name and password (a test drives the forms); the one client is a
// public native app with PKCE, whose loopback redirect may use any port (RFC 8252, section 7.3).
// With --service-secret, two confidential clients share that secret: `platform-service` (the
// client_credentials grant, for machine-to-machine API access) and `api` (a resource server that
// checks bearer tokens through token introspection, RFC 7662). --token-ttl sets the lifetime in
// seconds of client-credentials access tokens (default 600), so that tests can make them expire.
//
//   node sandbox/oidc/server.mjs --port 4455 [--service-secret S --token-ttl 1]
import Provider from 'oidc-provider';

const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1]);
const issuer = `http://127.0.0.1:${port}`;
const option = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const serviceSecret = option('--service-secret');
const tokenTtl = Number(option('--token-ttl') ?? 600);
const confidential = (clientId, grantTypes) => ({
  client_id: clientId,
  client_secret: serviceSecret,
  grant_types: grantTypes,
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
});

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'integration-platform',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    ...(serviceSecret ? [confidential('platform-service', ['client_credentials']), confidential('api', [])] : []),
  ],
  scopes: ['openid', 'offline_access'],
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
  },
  ttl: { ClientCredentials: () => tokenTtl },
  pkce: { required: () => true },
  async findAccount(_ctx, id) {
    return { accountId: id, async claims() { return { sub: id }; } };
  },
});
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
