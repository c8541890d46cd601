// The official OpenAI JavaScript SDK's Files API against a running lingshu-server: a batch file
// uploaded from disk (the SDK puts `file` before `purpose` in its form), read back, listed and
// deleted; a bad line refused as a BadRequestError naming the line. Run by
// tests/files/test_files_js.py; prints a JSON report on stdout.
//
// Environment: LINGSHU_URL, LINGSHU_KEY (an API key of the server), LINGSHU_BATCH_FILE (a valid
// batch file), LINGSHU_BAD_FILE (one whose second line is bad).
import assert from 'node:assert/strict';
import { createReadStream, readFileSync } from 'node:fs';

import OpenAI, { toFile } from 'openai';

const env = process.env;
const client = new OpenAI({ baseURL: `${env.LINGSHU_URL}/v1`, apiKey: env.LINGSHU_KEY, maxRetries: 0 });
const results = [];
try {
  const created = await client.files.create({
    file: createReadStream(env.LINGSHU_BATCH_FILE),
    purpose: 'batch',
  });
  assert.equal(created.object, 'file');
  assert.equal(created.purpose, 'batch');
  assert.equal(created.bytes, readFileSync(env.LINGSHU_BATCH_FILE).length);
  assert.deepEqual(await client.files.retrieve(created.id), created);
  const content = Buffer.from(await (await client.files.content(created.id)).arrayBuffer());
  assert.ok(content.equals(readFileSync(env.LINGSHU_BATCH_FILE)));
  const listed = [];
  for await (const file of client.files.list({ purpose: 'batch' })) listed.push(file.id);
  assert.deepEqual(listed, [created.id]);
  let refused;
  try {
    await client.files.create({
      file: await toFile(readFileSync(env.LINGSHU_BAD_FILE), 'bad.jsonl'),
      purpose: 'batch',
    });
  } catch (error) {
    refused = error;
  }
  assert.ok(refused instanceof OpenAI.BadRequestError, String(refused));
  assert.equal(refused.param, 'file');
  assert.match(refused.message, /line 2: /);
  const deleted = await client.files.delete(created.id);
  assert.deepEqual([deleted.id, deleted.deleted], [created.id, true]);
  results.push({ name: 'files', ok: true });
} catch (error) {
  results.push({ name: 'files', ok: false, error: String(error?.stack ?? error) });
}
console.log(JSON.stringify({ results }));
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
