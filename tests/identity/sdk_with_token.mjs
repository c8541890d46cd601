// The official OpenAI JavaScript SDK with an access token as its key: the token comes from the
// OpenID provider by client credentials, as a hospital service would get it. The report (JSON
// on stdout) names each check. Run by tests/identity/test_sdks.py.
//
// Environment: LINGSHU_URL, LINGSHU_MODEL, LINGSHU_IMAGE_FILE (a file holding an image data
// URL), OIDC_ISSUER, OIDC_AUDIENCE, OIDC_CLIENT, OIDC_SECRET, OIDC_ROLELESS_CLIENT and
// OIDC_ROLELESS_SECRET (a client whose tokens lack the role).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import OpenAI from 'openai';

const env = process.env;
const image = readFileSync(env.LINGSHU_IMAGE_FILE, 'utf8').trim();

async function token(client, secret) {
  const response = await fetch(`${env.OIDC_ISSUER}/token`, {
    method: 'POST',
    headers: {
      Authorization: `Basic ${Buffer.from(`${client}:${secret}`).toString('base64')}`,
      'Content-Type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: env.OIDC_AUDIENCE }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).access_token;
}

const connect = (apiKey) =>
  new OpenAI({ baseURL: `${env.LINGSHU_URL}/v1`, apiKey, maxRetries: 0, timeout: 600_000 });
const messages = [{
  role: 'user',
  content: [
    { type: 'image_url', image_url: { url: image } },
    { type: 'text', text: 'Describe the findings.' },
  ],
}];

const checks = {
  'chat with a token: image, headers counting down': async () => {
    const openai = connect(await token(env.OIDC_CLIENT, env.OIDC_SECRET));
    const first = await openai.chat.completions
      .create({ model: env.LINGSHU_MODEL, messages, max_tokens: 6 })
      .withResponse();
    assert.ok(first.data.usage.completion_tokens > 0);
    assert.equal(typeof first.data.choices[0].message.content, 'string');
    const limit = Number(first.response.headers.get('x-ratelimit-limit-tokens'));
    const before = Number(first.response.headers.get('x-ratelimit-remaining-tokens'));
    assert.ok(limit > 0 && before <= limit);
    const second = await openai.chat.completions
      .create({ model: env.LINGSHU_MODEL, messages, max_tokens: 6 })
      .withResponse();
    const after = Number(second.response.headers.get('x-ratelimit-remaining-tokens'));
    // the first answer's tokens are counted (the bucket refills a little meanwhile)
    const used = first.data.usage.prompt_tokens + first.data.usage.completion_tokens;
    assert.ok(after < before, `${before} then ${after} after ${used} tokens`);
  },
  'chat with a token: streamed': async () => {
    const openai = connect(await token(env.OIDC_CLIENT, env.OIDC_SECRET));
    const stream = await openai.chat.completions.create({
      model: env.LINGSHU_MODEL, messages, max_tokens: 6, stream: true,
    });
    let chunks = 0;
    for await (const chunk of stream) chunks += chunk.choices.length;
    assert.ok(chunks > 1);
  },
  'errors: 401 AuthenticationError for a token of no issuer': async () => {
    const forged = 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2V2aWwuZXhhbXBsZSJ9.c2ln';
    await assert.rejects(
      connect(forged).models.list(),
      (err) => err instanceof OpenAI.AuthenticationError && err.code === 'invalid_token',
    );
  },
  'errors: 403 PermissionDeniedError without the role': async () => {
    const roleless = await token(env.OIDC_ROLELESS_CLIENT, env.OIDC_ROLELESS_SECRET);
    await assert.rejects(
      connect(roleless).models.list(),
      (err) => err instanceof OpenAI.PermissionDeniedError && err.code === 'insufficient_scope',
    );
  },
};

const results = [];
for (const [name, check] of Object.entries(checks)) {
  try {
    await check();
    results.push({ name, ok: true });
  } catch (err) {
    results.push({ name, ok: false, error: String(err?.stack ?? err) });
  }
}
process.stdout.write(JSON.stringify({ results }));
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
