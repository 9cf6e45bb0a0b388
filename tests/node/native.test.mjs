// Agenta's native span JSON: id and time forms, exact values, the answer.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, postJson, PROJECT_A, traceUuid, spanUuid } from './lib/harness.mjs';

const gw = await startGateway();
after(async () => { await gw.stop(); });

const T = '0af7651916cd43dd8448eb211c80319c';
const S = 'b7ad6b7169203331';

async function row(trace, span) {
  const rows = await gw.query(
    `SELECT project_id::text, parent_id::text, span_name, span_kind::text, span_type::text, trace_type::text,
            status_code::text, status_message,
            (extract(epoch from start_time) * 1000000)::bigint::text AS start_us,
            (extract(epoch from end_time) * 1000000)::bigint::text AS end_us,
            attributes, attributes::text AS attributes_text, events, links, "references", hashes
       FROM spans WHERE trace_id = $1 AND span_id = $2`, [trace, span]);
  assert.equal(rows.length, 1);
  return rows[0];
}

test('native spans are stored with Agenta\'s id mapping and answered with count and links', async () => {
  const r = await postJson(gw, '/v1/spans', { spans: [
    { trace_id: T, span_id: S, span_name: 'root', span_kind: 'SPAN_KIND_SERVER', trace_type: 'INVOCATION', span_type: 'WORKFLOW',
      status_code: 'STATUS_CODE_OK', start_time: '2024-05-06T07:08:09.123456Z', end_time: '2024-05-06T07:08:10.654321+00:00' },
    { trace_id: traceUuid(T), span_id: '0x' + '1234567890abcdef', parent_id: S, span_name: 'child',
      start_time: 1714979289123456, end_time: 1714979290 },
  ] });
  assert.equal(r.status, 200, r.text);
  const body = r.json();
  assert.equal(body.count, 2);
  assert.deepEqual(body.links, [
    { trace_id: traceUuid(T), span_id: spanUuid(S) },
    { trace_id: traceUuid(T), span_id: spanUuid('1234567890abcdef') },
  ]);
  const root = await row(traceUuid(T), spanUuid(S));
  assert.equal(root.project_id, PROJECT_A);
  assert.equal(root.parent_id, null);
  assert.equal(root.span_kind, 'SPAN_KIND_SERVER');
  assert.equal(root.span_type, 'WORKFLOW');
  assert.equal(root.trace_type, 'INVOCATION');
  assert.equal(root.status_code, 'STATUS_CODE_OK');
  assert.equal(root.start_us, '1714979289123456');
  assert.equal(root.end_us, '1714979290654321');
  const child = await row(traceUuid(T), spanUuid('1234567890abcdef'));
  assert.equal(child.parent_id, spanUuid(S));
  assert.equal(child.start_us, '1714979289123456', '16 digits are µs');
  assert.equal(child.end_us, '1714979290000000', '10 digits are seconds');
});

test('every epoch digit count: s, ms, µs, ns', async () => {
  const forms = [['1714979289', '1714979289000000'], ['1714979289123', '1714979289123000'],
    ['1714979289123456', '1714979289123456'], ['1714979289123456789', '1714979289123456']];
  let i = 0;
  for (const [sent, want] of forms) {
    const sid = `00000000000000${10 + i++}`;
    const r = await postJson(gw, '/v1/spans', `{"spans":[{"trace_id":"${T}","span_id":"${sid}","parent_id":"${S}","span_name":"t","start_time":${sent},"end_time":${sent}}]}`);
    assert.equal(r.status, 200, r.text);
    assert.equal((await row(traceUuid(T), spanUuid(sid))).start_us, want, `${sent}`);
  }
});

test('attribute values round-trip exactly: int64 beyond 2^53, 1 vs 1.0, {} vs [], null, unicode', async () => {
  const sid = 'aaaaaaaaaaaa0001';
  const body = `{"spans":[{"trace_id":"${T}","span_id":"${sid}","parent_id":"${S}","span_name":"exact","start_time":1714979289,"end_time":1714979289,
    "attributes":{"big":9223372036854775807,"neg":-9223372036854775808,"one":1,"onepoint":1.0,"obj":{},"arr":[],"nil":null,
    "uni":"h\\u00e9llo \\ud83d\\ude00 ✓","nested":{"a":{"b":[1,"x",true]}}}}]}`;
  const r = await postJson(gw, '/v1/spans', body);
  assert.equal(r.status, 200, r.text);
  const got = await gw.query(`SELECT attributes->'big' #>> '{}' AS big, attributes->'neg' #>> '{}' AS neg,
      attributes->'one' #>> '{}' AS one, attributes->'onepoint' #>> '{}' AS onepoint,
      jsonb_typeof(attributes->'obj') AS obj, jsonb_typeof(attributes->'arr') AS arr,
      jsonb_typeof(attributes->'nil') AS nil, attributes->>'uni' AS uni, attributes->'nested' AS nested
      FROM spans WHERE span_id = $1`, [spanUuid(sid)]);
  assert.deepEqual(got[0], { big: '9223372036854775807', neg: '-9223372036854775808', one: '1', onepoint: '1.0',
    obj: 'object', arr: 'array', nil: 'null', uni: 'héllo 😀 ✓', nested: { a: { b: [1, 'x', true] } } });
});

test('a payload project_id never decides where a span lands', async () => {
  const sid = 'cccccccccccc0001';
  const r = await postJson(gw, '/v1/spans', { spans: [{ project_id: '0190a3b4-0000-7000-8000-00000000000b', trace_id: T, span_id: sid, parent_id: S, span_name: 'x', start_time: 1714979289, end_time: 1714979289 }] });
  assert.equal(r.status, 200);
  assert.equal((await row(traceUuid(T), spanUuid(sid))).project_id, PROJECT_A);
});

test('a re-sent span updates the row and keeps created_at', async () => {
  const sid = 'dddddddddddd0001';
  const send = (name) => postJson(gw, '/v1/spans', { spans: [{ trace_id: T, span_id: sid, parent_id: S, span_name: name, start_time: 1714979289, end_time: 1714979289 }] });
  assert.equal((await send('first')).status, 200);
  const [a] = await gw.query('SELECT created_at, updated_at FROM spans WHERE span_id = $1', [spanUuid(sid)]);
  assert.equal((await send('second')).status, 200);
  const [b] = await gw.query('SELECT span_name, created_at, updated_at FROM spans WHERE span_id = $1', [spanUuid(sid)]);
  assert.equal(b.span_name, 'second');
  assert.equal(b.created_at.getTime(), a.created_at.getTime());
  assert.ok(b.updated_at, 'updated_at is set on update');
});

test('malformed shapes are 400 naming the problem; nothing is stored', async () => {
  const before = (await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n;
  for (const [body, re] of [
    ['{"spans": 3}', /spans/], ['[1,2]', /spans/], ['{"spans":[1]', /JSON/], ['not json', /JSON/], ['', /JSON|empty/],
    ['{"spans":[{"trace_id":"zz","span_id":"b7ad6b7169203331","start_time":1,"end_time":1}]}', null],
  ]) {
    const r = await postJson(gw, '/v1/spans', body);
    if (re) {
      assert.equal(r.status, 400, body);
      assert.match(r.json().error, re, body);
    } else {
      assert.equal(r.status, 200, body);
      assert.equal(r.json().count, 0);
      assert.equal(r.json().rejected, 1);
      assert.match(r.json().error, /trace_id/);
    }
  }
  assert.equal((await gw.query('SELECT count(*)::int AS n FROM spans'))[0].n, before);
});

test('deeply nested JSON is refused without harm', async () => {
  const deep = '{"spans":[{"trace_id":"' + T + '","span_id":"eeeeeeeeeeee0001","parent_id":"' + S + '","span_name":"d","start_time":1,"end_time":1,"attributes":{"x":' + '['.repeat(100000) + ']'.repeat(100000) + '}}]}';
  const r = await postJson(gw, '/v1/spans', deep);
  assert.ok(r.status === 400 || (r.status === 200 && r.json().count === 0), `${r.status} ${r.text.slice(0, 200)}`);
  assert.equal((await postJson(gw, '/v1/spans', { spans: [] })).status, 200, 'still serving');
});
