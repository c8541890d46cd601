// The official OpenAI JavaScript SDK against a running lingshu-server: every check below must
// pass, and the report (JSON on stdout) names each one. Run by tests/js/test_js_sdk.py.
//
// Environment: LINGSHU_URL (a server with API keys, a body limit of LINGSHU_MAX_BODY bytes and
// a per-key rate limit), LINGSHU_KEYS (some of its keys, comma-separated: requests take turns,
// to stay under the rate limit), LINGSHU_RATE_KEY (one more, spent on reaching the limit),
// LINGSHU_MODEL, LINGSHU_IMAGE_FILE (a file holding an image data URL), LINGSHU_OWNER_KEYS (two
// more: stored objects belong to the key that made them, so a chain keeps one key).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import OpenAI from 'openai';

const env = process.env;
const model = env.LINGSHU_MODEL;
const image = readFileSync(env.LINGSHU_IMAGE_FILE, 'utf8').trim();
const keys = env.LINGSHU_KEYS.split(',');
let requests = 0;
const connect = (apiKey) =>
  new OpenAI({ baseURL: `${env.LINGSHU_URL}/v1`, apiKey, maxRetries: 0, timeout: 600_000 });
// A client for the next request, with the next key.
const client = () => connect(keys[requests++ % keys.length]);

const WEATHER = {
  type: 'object',
  properties: {
    city: { type: 'string', minLength: 1, maxLength: 12 },
    days: { type: 'integer', minimum: 1, maximum: 7 },
  },
  required: ['city', 'days'],
  additionalProperties: false,
};
const CHAT_TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Forecast', parameters: WEATHER } },
];
const RESPONSE_TOOLS = [
  { type: 'function', name: 'get_weather', description: 'Forecast', parameters: WEATHER, strict: true },
];
const REPORT = {
  type: 'object',
  properties: {
    finding: { type: 'string', maxLength: 30 },
    urgent: { type: 'boolean' },
    score: { type: 'integer', minimum: 0, maximum: 5 },
  },
  required: ['finding', 'urgent', 'score'],
  additionalProperties: false,
};

function weatherArguments(text) {
  const value = JSON.parse(text);
  assert.deepEqual(Object.keys(value).sort(), ['city', 'days']);
  assert.equal(typeof value.city, 'string');
  const characters = [...value.city].length; // JSON Schema counts code points, not UTF-16 units
  assert.ok(characters >= 1 && characters <= 12, text);
  assert.ok(Number.isInteger(value.days) && value.days >= 1 && value.days <= 7, text);
  return value;
}

function report(text) {
  const value = JSON.parse(text);
  assert.deepEqual(Object.keys(value).sort(), ['finding', 'score', 'urgent']);
  assert.equal(typeof value.finding, 'string');
  assert.ok([...value.finding].length <= 30);
  assert.equal(typeof value.urgent, 'boolean');
  assert.ok(Number.isInteger(value.score) && value.score >= 0 && value.score <= 5);
  return value;
}

const imageMessage = (text) => ({
  role: 'user',
  content: [
    { type: 'image_url', image_url: { url: image } },
    { type: 'text', text },
  ],
});
const imageInput = (text) => [
  {
    role: 'user',
    content: [
      { type: 'input_image', image_url: image, detail: 'high' },
      { type: 'input_text', text },
    ],
  },
];

async function expectError(promise, errorClass, status) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof errorClass, `${error?.constructor?.name}: ${error?.message}`);
    assert.equal(error.status, status);
    assert.equal(typeof error.error?.message, 'string');
    assert.ok('param' in error.error && 'code' in error.error && 'type' in error.error);
    return error;
  }
  assert.fail(`expected ${errorClass.name} (${status})`);
}

const checks = {
  async 'chat: image'() {
    const completion = await client().chat.completions.create({
      model,
      messages: [imageMessage('Describe the findings.')],
      max_tokens: 8,
    });
    assert.equal(completion.object, 'chat.completion');
    assert.equal(completion.choices[0].message.role, 'assistant');
    assert.ok(['stop', 'length'].includes(completion.choices[0].finish_reason));
    assert.ok(completion.usage.prompt_tokens > 64, 'the image reached the model');
  },

  async 'chat: image, streamed'() {
    const stream = await client().chat.completions.create({
      model,
      messages: [imageMessage('Describe the findings.')],
      max_tokens: 8,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const finishes = chunks.filter((c) => c.choices[0]?.finish_reason).map((c) => c.choices[0].finish_reason);
    assert.equal(finishes.length, 1);
    assert.ok(chunks.at(-1).usage.prompt_tokens > 64);
    assert.equal(chunks.at(-1).usage.completion_tokens, chunks.at(-1).usage.total_tokens - chunks.at(-1).usage.prompt_tokens);
  },

  async 'chat: stream helper'() {
    const runner = client().chat.completions.stream({ model, messages: [imageMessage('Findings?')], max_tokens: 6 });
    const final = await runner.finalChatCompletion();
    assert.equal(typeof final.choices[0].message.content, 'string');
  },

  async 'responses: image'() {
    const response = await client().responses.create({
      model,
      input: imageInput('Describe the findings.'),
      instructions: 'You are a radiology assistant.',
      max_output_tokens: 8,
    });
    assert.equal(response.object, 'response');
    assert.ok(['completed', 'incomplete'].includes(response.status));
    assert.equal(response.output[0].type, 'message');
    assert.equal(response.output_text, response.output[0].content[0].text);
    assert.ok(response.usage.input_tokens > 64);
    assert.equal(response.usage.total_tokens, response.usage.input_tokens + response.usage.output_tokens);
  },

  async 'responses: streamed events'() {
    const stream = await client().responses.create({
      model,
      input: imageInput('Describe the findings.'),
      max_output_tokens: 5,
      stream: true,
    });
    const events = [];
    for await (const event of stream) events.push(event);
    const types = events.map((e) => e.type);
    assert.deepEqual(types.slice(0, 4), [
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
    ]);
    assert.deepEqual(types.slice(-4), [
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.incomplete',
    ]);
    assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
    const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.equal(events.at(-1).response.output[0].content[0].text, text);
    assert.equal(events.at(-1).response.incomplete_details.reason, 'max_output_tokens');
  },

  async 'responses: stream helper, structured output'() {
    const stream = client().responses.stream({
      model,
      input: 'Report as JSON.',
      text: { format: { type: 'json_schema', name: 'report', schema: REPORT, strict: true } },
      max_output_tokens: 400,
    });
    const final = await stream.finalResponse();
    assert.equal(final.status, 'completed');
    report(final.output_text);
  },

  async 'chat: structured output'() {
    const completion = await client().chat.completions.create({
      model,
      messages: [imageMessage('Report as JSON.')],
      response_format: { type: 'json_schema', json_schema: { name: 'report', schema: REPORT, strict: true } },
      max_tokens: 400,
    });
    assert.equal(completion.choices[0].finish_reason, 'stop');
    report(completion.choices[0].message.content);
  },

  async 'chat: tool calls, then the result'() {
    const messages = [imageMessage('What is the weather where this patient lives?')];
    const first = await client().chat.completions.create({
      model,
      messages,
      tools: CHAT_TOOLS,
      tool_choice: 'required',
      parallel_tool_calls: false,
      max_tokens: 300,
    });
    const choice = first.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    const [call] = choice.message.tool_calls;
    assert.equal(choice.message.tool_calls.length, 1);
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    weatherArguments(call.function.arguments);
    const second = await client().chat.completions.create({
      model,
      messages: [...messages, choice.message, { role: 'tool', tool_call_id: call.id, content: 'Sunny, 21 C' }],
      tools: CHAT_TOOLS,
      max_tokens: 5,
    });
    assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens);
  },

  async 'chat: tool calls, streamed'() {
    const runner = client().chat.completions.stream({
      model,
      messages: [{ role: 'user', content: 'Weather in Oslo?' }],
      tools: CHAT_TOOLS,
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      max_tokens: 600,
    });
    const final = await runner.finalChatCompletion();
    const calls = final.choices[0].message.tool_calls;
    assert.ok(calls.length >= 1);
    for (const call of calls) weatherArguments(call.function.arguments);
    assert.equal(final.choices[0].finish_reason, 'tool_calls');
  },

  async 'responses: function calls over turns'() {
    const input = imageInput('What is the weather where this patient lives?');
    const first = await client().responses.create({
      model,
      input,
      tools: RESPONSE_TOOLS,
      tool_choice: { type: 'function', name: 'get_weather' },
      parallel_tool_calls: false,
      max_output_tokens: 300,
    });
    const [call] = first.output;
    assert.equal(call.type, 'function_call');
    weatherArguments(call.arguments);
    const second = await client().responses.create({
      model,
      input: [...input, ...first.output, { type: 'function_call_output', call_id: call.call_id, output: 'Sunny' }],
      tools: RESPONSE_TOOLS,
      max_output_tokens: 5,
    });
    assert.ok(second.usage.input_tokens > first.usage.input_tokens);
  },

  async 'responses: stored, chained, retrieved, deleted'() {
    const [mine, theirs] = env.LINGSHU_OWNER_KEYS.split(',').map(connect);
    const first = await mine.responses.create({
      model,
      input: imageInput('Describe the findings.'),
      store: true,
      max_output_tokens: 4,
    });
    assert.equal(first.store, true);
    const second = await mine.responses.create({
      model,
      input: 'And the heart?',
      previous_response_id: first.id,
      store: true,
      max_output_tokens: 4,
    });
    assert.equal(second.previous_response_id, first.id);
    assert.ok(second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens);
    const kept = await mine.responses.retrieve(first.id);
    assert.deepEqual(kept.output, first.output);
    const items = [];
    for await (const item of mine.responses.inputItems.list(first.id, { order: 'asc' })) items.push(item);
    assert.equal(items.length, 1);
    assert.equal(items[0].content[0].image_url, image);
    await expectError(theirs.responses.retrieve(first.id), OpenAI.NotFoundError, 404);
    await mine.responses.delete(first.id);
    await expectError(mine.responses.retrieve(first.id), OpenAI.NotFoundError, 404);
  },

  async 'conversations: created, answered in, listed, deleted'() {
    const [, owner] = env.LINGSHU_OWNER_KEYS.split(',').map(connect);
    const conversation = await owner.conversations.create({ metadata: { study: 'chest' } });
    assert.equal(conversation.object, 'conversation');
    const response = await owner.responses.create({
      model,
      input: 'Findings?',
      conversation: conversation.id,
      max_output_tokens: 4,
    });
    assert.equal(response.conversation.id, conversation.id);
    const page = await owner.conversations.items.list(conversation.id, { order: 'asc' });
    assert.deepEqual(page.data.map((item) => item.role), ['user', 'assistant']);
    const deleted = await owner.conversations.delete(conversation.id);
    assert.equal(deleted.deleted, true);
  },

  async 'responses: function calls, streamed'() {
    const stream = client().responses.stream({
      model,
      input: 'Weather in two cities?',
      tools: RESPONSE_TOOLS,
      tool_choice: 'required',
      max_output_tokens: 600,
    });
    const deltas = [];
    stream.on('response.function_call_arguments.delta', (event) => deltas.push(event.delta));
    const final = await stream.finalResponse();
    assert.ok(final.output.length >= 1 && deltas.length > 0);
    for (const item of final.output) {
      assert.equal(item.type, 'function_call');
      weatherArguments(item.arguments);
    }
  },

  async 'errors: 401 AuthenticationError'() {
    const error = await expectError(connect('sk-wrong').models.list(), OpenAI.AuthenticationError, 401);
    assert.equal(error.code, 'invalid_api_key');
  },

  async 'errors: 404 NotFoundError'() {
    const request = client().responses.create({ model: 'gpt-nonexistent', input: 'x' });
    const error = await expectError(request, OpenAI.NotFoundError, 404);
    assert.equal(error.code, 'model_not_found');
    assert.equal(error.param, 'model');
  },

  async 'errors: 400 BadRequestError'() {
    const chat = client().chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], temperature: 5 });
    assert.equal((await expectError(chat, OpenAI.BadRequestError, 400)).param, 'temperature');
    const unknown = client().responses.create({ model, input: 'x', previous_response_id: 'resp_none' });
    const error = await expectError(unknown, OpenAI.BadRequestError, 400);
    assert.equal(error.param, 'previous_response_id');
    assert.equal(error.code, 'previous_response_not_found');
  },

  async 'errors: 413 request too large'() {
    const big = 'a'.repeat(Number(env.LINGSHU_MAX_BODY) + 1);
    const request = client().chat.completions.create({ model, messages: [{ role: 'user', content: big }] });
    const error = await expectError(request, OpenAI.APIError, 413);
    assert.equal(error.code, 'request_too_large');
  },

  async 'errors: 429 RateLimitError'() {
    const limited = connect(env.LINGSHU_RATE_KEY);
    for (let i = 0; i < 50; i += 1) {
      try {
        await limited.models.list();
      } catch (error) {
        assert.ok(error instanceof OpenAI.RateLimitError, String(error));
        assert.equal(error.status, 429);
        assert.ok(Number(error.headers.get('retry-after')) >= 1);
        return;
      }
    }
    assert.fail('no 429 after 50 requests');
  },
};

const results = [];
for (const [name, check] of Object.entries(checks)) {
  const started = Date.now();
  try {
    await check();
    results.push({ name, ok: true, ms: Date.now() - started });
  } catch (error) {
    results.push({ name, ok: false, ms: Date.now() - started, error: String(error?.stack ?? error) });
  }
}
const sdk = JSON.parse(readFileSync(new URL('./node_modules/openai/package.json', import.meta.url))).version;
console.log(JSON.stringify({ sdk, results }, null, 1));
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
