'use strict';
// grpc-js client of the feedguard interop suite, run by ../test_grpc_js.py:
//   node client.js TARGET CALL_ID_PREFIX TIMEOUT_MS
// Makes a few calls to fgtest.Echo through TARGET (no protoc: Buffers in and
// out) and prints one JSON object with what it saw; the Python test asserts.
// Exit code 0 unless the script itself broke.
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');

const [target, prefix, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg || 30000);
const MAX = 64 * 1024 * 1024;
const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
  'grpc.max_receive_message_length': MAX,
  'grpc.max_send_message_length': MAX,
});

const ident = (b) => b;
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const enc = (v) => (Buffer.isBuffer(v) ? 'b64:' + v.toString('base64') : v);

function mdToJson(md) {
  const out = {};
  if (!md) return out;
  for (const [k, vs] of Object.entries(md.toJSON())) out[k] = vs.map(enc);
  return out;
}

function makeMd(pairs) {
  const md = new grpc.Metadata();
  for (const [k, v] of pairs) md.add(k, v);
  return md;
}

function opts() {
  return { deadline: Date.now() + timeoutMs };
}

function unary(path, buf, pairs) {
  return new Promise((resolve) => {
    const r = { headers: null };
    let pending = 2;
    const done = () => { if (--pending === 0) resolve(r); };
    const call = client.makeUnaryRequest(path, ident, ident, buf, makeMd(pairs), opts(),
      (err, resp) => { r.resp = resp || null; r.err = err ? err.message : null; done(); });
    call.on('metadata', (md) => { r.headers = mdToJson(md); });
    call.on('status', (s) => {
      r.code = s.code; r.details = s.details; r.trailers = mdToJson(s.metadata); done();
    });
  });
}

function serverStream(path, buf, pairs) {
  return new Promise((resolve) => {
    const r = { messages: [], headers: null };
    const call = client.makeServerStreamRequest(path, ident, ident, buf, makeMd(pairs), opts());
    call.on('metadata', (md) => { r.headers = mdToJson(md); });
    call.on('data', (m) => r.messages.push(m));
    call.on('error', () => {});   // the status event carries it
    call.on('status', (s) => {
      r.code = s.code; r.details = s.details; r.trailers = mdToJson(s.metadata); resolve(r);
    });
  });
}

async function main() {
  const out = {};
  const path = (m) => '/fgtest.Echo/' + m;

  let r = await unary(path('Unary'), Buffer.from('hello from grpc-js'), [
    ['x-call-id', prefix + '-unary'], ['x-js', 'plain value'],
    ['x-js-bin', Buffer.from([0, 1, 2, 254, 255])]]);
  out.unary = { code: r.code, details: r.details, resp: r.resp && r.resp.toString('latin1'),
                headers: r.headers, trailers: r.trailers };

  r = await serverStream(path('ServerStream'), Buffer.alloc(0), [
    ['x-call-id', prefix + '-stream'], ['x-count', '5'], ['x-size', '1000']]);
  out.stream = { code: r.code, details: r.details, sizes: r.messages.map((m) => m.length),
                 sha256: r.messages.map(sha) };

  r = await unary(path('Unary'), Buffer.alloc(0), [
    ['x-call-id', prefix + '-status'], ['x-status', '5'],
    ['x-message-bin', Buffer.from('nicht gefunden: ünïcödé ✓ 日本', 'utf8')]]);
  out.status = { code: r.code, details: r.details, trailers: r.trailers };

  const big = crypto.randomBytes(8 * 1024 * 1024);
  r = await unary(path('Unary'), big, [['x-call-id', prefix + '-big']]);
  out.big = { code: r.code, details: r.details, req_len: big.length, req_sha256: sha(big),
              resp_len: r.resp ? r.resp.length : -1, resp_sha256: r.resp ? sha(r.resp) : null,
              equal: r.resp ? big.equals(r.resp) : false };

  client.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write('client.js failed: ' + (e && e.stack ? e.stack : e) + '\n');
  process.exit(2);
});
