// compatcanary (npm, pinned in package-lock.json) against a running lingshu-server: its own
// probes through its own scanner, each probe with the next API key. The server limits requests
// per key and minute, and the CLI sends every probe with one key; otherwise this is what
// `compatcanary scan --format json` reports. Run by tests/conformance/test_suites.py.
//
// Environment: LINGSHU_URL, LINGSHU_MODEL, LINGSHU_KEYS (comma-separated keys, taken in turn).
import { readFileSync } from 'node:fs';

import { scanEndpoint } from 'compatcanary';
// The probe list itself: the package exports only the scanner, which runs all of them.
import { probes } from './node_modules/compatcanary/src/probes.js';

const env = process.env;
const keys = env.LINGSHU_KEYS.split(',');
const options = {
  baseUrl: `${env.LINGSHU_URL}/v1`,
  model: env.LINGSHU_MODEL,
  profile: 'modern', // the default: Chat Completions and the Responses API
  timeoutMs: 300_000,
};
const reports = [];
for (const [index, probe] of probes.entries()) {
  reports.push(await scanEndpoint({ ...options, apiKey: keys[index % keys.length] }, [probe]));
}
const manifest = JSON.parse(readFileSync(new URL('./node_modules/compatcanary/package.json', import.meta.url)));
process.stdout.write(
  JSON.stringify({
    scanner: { ...reports[0].scanner, package: manifest.version },
    results: reports.flatMap((report) => report.results),
  }),
);
