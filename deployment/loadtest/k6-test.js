// Load test for llm-gateway: ramps to a target request rate of chat completions, streamed
// and not, and fails when the gateway misses its thresholds.
//
//   make run                                   # the mock provider, in another shell
//   k6 run deployment/loadtest/k6-test.js
//   k6 run -e BASE_URL=https://gateway.example.com -e MODEL=smart -e API_KEY=... \
//          -e RPS=200 -e RAMP=2m -e HOLD=5m deployment/loadtest/k6-test.js
//
// Environment: BASE_URL (http://127.0.0.1:8080), MODEL (mock-1), API_KEY (none),
// RPS (50), RAMP (30s), HOLD (1m), STREAM_SHARE (0.5: the share of streamed requests),
// MAX_TOKENS (16).
import http from 'k6/http';
import { check } from 'k6';
import { Rate, Trend } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MODEL = __ENV.MODEL || 'mock-1';
const RPS = parseInt(__ENV.RPS || '50', 10);
const RAMP = __ENV.RAMP || '30s';
const HOLD = __ENV.HOLD || '1m';
const STREAM_SHARE = parseFloat(__ENV.STREAM_SHARE || '0.5');
const MAX_TOKENS = parseInt(__ENV.MAX_TOKENS || '16', 10);

const errors = new Rate('gateway_errors');
const streamDuration = new Trend('gateway_stream_duration', true);

export const options = {
  scenarios: {
    chat: {
      executor: 'ramping-arrival-rate',
      startRate: 1,
      timeUnit: '1s',
      preAllocatedVUs: Math.max(10, Math.ceil(RPS / 2)),
      maxVUs: Math.max(50, RPS * 4),
      stages: [
        { target: RPS, duration: RAMP },
        { target: RPS, duration: HOLD },
      ],
    },
  },
  thresholds: {
    http_req_duration: ['p(95)<500', 'p(99)<2000'],
    gateway_errors: ['rate<0.001'],
    http_req_failed: ['rate<0.001'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

const headers = { 'content-type': 'application/json' };
if (__ENV.API_KEY) {
  headers.authorization = `Bearer ${__ENV.API_KEY}`;
}

export default function () {
  const stream = Math.random() < STREAM_SHARE;
  const body = JSON.stringify({
    model: MODEL,
    stream,
    max_tokens: MAX_TOKENS,
    messages: [{ role: 'user', content: `load test ${__VU}-${__ITER}` }],
  });
  const res = http.post(`${BASE_URL}/v1/chat/completions`, body, {
    headers,
    tags: { kind: stream ? 'stream' : 'json' },
    timeout: '30s',
  });
  let ok;
  if (stream) {
    // k6 reads the whole SSE body; a good stream ends with [DONE] and has no error event.
    ok = check(res, {
      'status 200': (r) => r.status === 200,
      'stream ends with [DONE]': (r) => typeof r.body === 'string' && r.body.includes('data: [DONE]'),
      'no error event': (r) => typeof r.body === 'string' && !r.body.includes('data: {"error"'),
    });
    streamDuration.add(res.timings.duration);
  } else {
    ok = check(res, {
      'status 200': (r) => r.status === 200,
      'has choices': (r) => r.status === 200 && Array.isArray(r.json('choices')),
    });
  }
  errors.add(!ok);
}
