// The official OpenAI JavaScript SDK's Batch API against a running lingshu-server on the real
// engine: a batch file uploaded, a batch created, run to `completed` and its output read line by
// line; a second batch cancelled; an unknown batch a NotFoundError. Run by
// tests/batches/test_batches_engine.py; prints a JSON report on stdout.
//
// Environment: LINGSHU_URL, LINGSHU_MODEL.
import assert from 'node:assert/strict';

import OpenAI, { toFile } from 'openai';

const env = process.env;
const client = new OpenAI({ baseURL: `${env.LINGSHU_URL}/v1`, apiKey: 'unused', maxRetries: 0 });
const line = (id, tokens) => ({
  custom_id: id,
  method: 'POST',
  url: '/v1/chat/completions',
  body: {
    model: env.LINGSHU_MODEL,
    messages: [{ role: 'user', content: `Draft a report for ${id}.` }],
    max_tokens: tokens,
    temperature: 0,
  },
});
const upload = async (lines) =>
  client.files.create({
    file: await toFile(Buffer.from(lines.map((l) => JSON.stringify(l) + '\n').join('')), 'night.jsonl'),
    purpose: 'batch',
  });
const ended = async (id) => {
  for (;;) {
    const batch = await client.batches.retrieve(id);
    if (['completed', 'failed', 'expired', 'cancelled'].includes(batch.status)) return batch;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
};

const results = [];
async function check(name, run) {
  try {
    await run();
    results.push({ name, ok: true });
  } catch (error) {
    results.push({ name, ok: false, error: String(error?.stack ?? error) });
  }
}

await check('batches: created, run, output read', async () => {
  const file = await upload([line('study-a', 6), line('study-b', 6)]);
  const created = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    metadata: { worklist: 'js' },
  });
  assert.equal(created.object, 'batch');
  const batch = await ended(created.id);
  assert.equal(batch.status, 'completed');
  assert.deepEqual(batch.request_counts, { total: 2, completed: 2, failed: 0 });
  assert.deepEqual(batch.metadata, { worklist: 'js' });
  const text = await (await client.files.content(batch.output_file_id)).text();
  const lines = text.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.custom_id).sort(), ['study-a', 'study-b']);
  for (const l of lines) {
    assert.equal(l.response.status_code, 200);
    assert.equal(l.response.body.object, 'chat.completion');
  }
  const listed = [];
  for await (const b of client.batches.list({ limit: 2 })) listed.push(b.id);
  assert.ok(listed.includes(batch.id));
});

await check('batches: cancelled', async () => {
  const file = await upload(Array.from({ length: 40 }, (_, i) => line(`study-${i}`, 64)));
  const created = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  const cancelling = await client.batches.cancel(created.id);
  assert.ok(['cancelling', 'cancelled'].includes(cancelling.status));
  const batch = await ended(created.id);
  assert.equal(batch.status, 'cancelled');
  assert.ok(batch.request_counts.completed < 40);
});

await check('batches: unknown id', async () => {
  let refused;
  try {
    await client.batches.retrieve('batch_0000');
  } catch (error) {
    refused = error;
  }
  assert.ok(refused instanceof OpenAI.NotFoundError, String(refused));
});

console.log(JSON.stringify({ results }));
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
