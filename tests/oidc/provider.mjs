// Starts oauth2-mock-server with the token customization the registry-proxy tests need.
//
//   node provider.mjs PORT AUDIENCE CLIENTS_JSON
//
// CLIENTS_JSON maps client ids to {"secret": ..., "sub": ..., "groups": [...]}. The mock
// server issues client_credentials tokens with no `sub` and only the `aud` a request asks
// for, and it accepts any client; these hooks make it behave like a real provider for the
// registered clients: unknown clients or wrong secrets get `invalid_client`, and tokens carry
// sub, groups, azp/client_id and the configured audience. The module path comes from
// OAUTH2_MOCK_SERVER_MODULE because the package is installed outside this repository.
import { pathToFileURL } from 'node:url';

const [port, audience, clientsJson] = process.argv.slice(2);
const { OAuth2Server } = await import(pathToFileURL(process.env.OAUTH2_MOCK_SERVER_MODULE).href);
const clients = JSON.parse(clientsJson);

function credentials(req) {
  const auth = req.headers.authorization ?? '';
  if (auth.startsWith('Basic ')) {
    const [id, secret] = Buffer.from(auth.slice(6), 'base64').toString().split(':');
    return { id: decodeURIComponent(id ?? ''), secret: decodeURIComponent(secret ?? '') };
  }
  return { id: req.body?.client_id, secret: req.body?.client_secret };
}

function known(req) {
  const { id, secret } = credentials(req);
  const client = clients[id];
  return client && client.secret === secret ? { id, ...client } : null;
}

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.issuer.url = `http://127.0.0.1:${port}`;

server.service.on('beforeTokenSigning', (token, req) => {
  const client = known(req);
  if (!client) return;
  token.payload.sub = client.sub;
  token.payload.groups = client.groups ?? [];
  token.payload.aud = audience;
  token.payload.azp = client.id;
  token.payload.client_id = client.id;
});

server.service.on('beforeResponse', (response, req) => {
  if (!known(req)) {
    response.statusCode = 401;
    response.body = { error: 'invalid_client' };
  }
});

await server.start(Number(port), '127.0.0.1');
console.log(`READY ${server.issuer.url}`);
