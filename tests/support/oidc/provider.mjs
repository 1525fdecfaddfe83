// A real OpenID Connect provider (panva's certified oidc-provider) on loopback, for the tests.
// Usage: node provider.mjs CONFIG.json, where the JSON holds port, issuer, clients,
// accounts_file and optionally id_token_ttl (see tests/support/oidc_provider.py).
// Sign-in uses the provider's own development login page; consent is granted automatically.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// Re-read on every call, so that a test can change someone's claims between two sign-ins.
async function loadAccounts() {
  return JSON.parse(await readFile(config.accounts_file, 'utf8'));
}

async function findAccount(_ctx, id) {
  const accounts = await loadAccounts();
  if (!Object.hasOwn(accounts, id)) {
    return undefined;
  }
  return {
    accountId: id,
    // The provider keeps only the claims of the granted scopes.
    async claims() {
      return { ...accounts[id], sub: id };
    },
  };
}

// Throwaway keys: nothing signed by this process outlives it.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256',
};

const provider = new Provider(config.issuer, {
  clients: config.clients.map((client) => ({
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  findAccount,
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'department', 'title'],
    groups: ['groups'],
  },
  // The claims of the granted scopes go into the ID token too, not only to userinfo.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => true }, // S256 is the only method oidc-provider 9 supports
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // No consent page: every client is first party here, so grant what it asks for (the
  // documented loadExistingGrant recipe, extended to whatever scopes this request names).
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    const grant = (grantId && await oidc.provider.Grant.find(grantId))
      || new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
    grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(' '));
    grant.addOIDCClaims([...oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: config.id_token_ttl ?? 3600,
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
  },
});

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The development login page accepts any login; refuse those not in the accounts file by
// showing the form again with an error instead of finishing the interaction.
const interactionFinished = provider.interactionFinished.bind(provider);
provider.interactionFinished = async (req, res, result, options) => {
  const accountId = result?.login?.accountId;
  if (accountId !== undefined && !Object.hasOwn(await loadAccounts(), accountId)) {
    const ctx = Provider.ctx;
    ctx.status = 401;
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html>
<html>
  <head><meta charset="utf-8"><title>Sign-in</title></head>
  <body>
    <h1>Sign-in</h1>
    <p class="error" role="alert">Unknown login: ${escape(accountId)}</p>
    <form autocomplete="off" action="${escape(ctx.path)}" method="post">
      <input type="hidden" name="prompt" value="login"/>
      <input required type="text" name="login" placeholder="Enter any login" autofocus="on">
      <input required type="password" name="password" placeholder="and password">
      <button type="submit" class="login login-submit">Sign-in</button>
    </form>
  </body>
</html>
`;
    return;
  }
  await interactionFinished(req, res, result, options);
};

provider.listen(config.port, '127.0.0.1', () => {
  console.log(`listening ${config.issuer}`);
});
