// An OpenID provider on loopback for tests/identity: panva's oidc-provider (OpenID Certified)
// issuing JWT access tokens by client credentials and by authorization code with PKCE.
//
//   node provider.mjs < config.json     (prints {"issuer": "http://127.0.0.1:PORT"} when up)
//
// config.json: {"jwks": {"keys": [private JWKs]}, "audiences": [...], "clients": [...],
// "claims": {client_id or "user": {extra access token claims}}, "ttl": seconds}.
// The tests own the keys, so they can rotate them: POST /_control/config {"jwks": ...,
// "clients": [...]} builds a new provider (same issuer, same port) with those replaced;
// POST /_control/mode {"mode": "hang"} leaves every provider request unanswered (the provider
// is down), "up" serves again; GET /_control/stats counts the requests for the key set.
import http from "node:http";
import Provider, { errors } from "oidc-provider";

const config = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => { text += chunk; });
  process.stdin.on("end", () => resolve(text));
}));
let provider;
let mode = "up";
let jwksRequests = 0;
const hanging = new Set();

function build(issuer) {
  const built = new Provider(issuer, {
    jwks: config.jwks,
    clients: config.clients,
    ttl: { AccessToken: config.ttl, ClientCredentials: config.ttl },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf ?? config.audiences[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (!config.audiences.includes(resource)) throw new errors.InvalidTarget();
          return { scope: "lingshu.use", audience: resource, accessTokenFormat: "jwt" };
        },
      },
    },
    extraTokenClaims: (ctx, token) => config.claims[token.accountId ? "user" : token.clientId],
  });
  built.on("server_error", (ctx, err) => process.stderr.write(`server_error: ${err}\n`));
  return built;
}

function readJson(req) {
  return new Promise((resolve) => {
    let text = "";
    req.on("data", (chunk) => { text += chunk; });
    req.on("end", () => resolve(JSON.parse(text || "{}")));
  });
}

const server = http.createServer(async (req, res) => {
  if (req.url.startsWith("/_control/")) {
    const body = await readJson(req);
    if (req.url === "/_control/config") {
      Object.assign(config, body);
      provider = build(provider.issuer);
    }
    if (req.url === "/_control/stats") {
      res.end(JSON.stringify({ jwks_requests: jwksRequests }));
      return;
    }
    if (req.url === "/_control/mode") {
      mode = body.mode;
      if (mode === "up") for (const held of hanging) held.destroy();
      hanging.clear();
    }
    res.end("{}");
    return;
  }
  if (req.url === "/jwks") jwksRequests += 1;
  if (mode === "hang") {
    hanging.add(res.socket);
    return;
  }
  provider.callback()(req, res);
});
server.listen(0, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = build(issuer);
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
