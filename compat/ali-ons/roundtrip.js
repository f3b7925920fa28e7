'use strict';
// Produces COUNT messages to TOPIC with ali-ons (a third-party RocketMQ Remoting client), then
// consumes them with its push consumer (PULL with long polling, offsets, heartbeats, rebalance).
// Prints one JSON line per event; the Rust test checks them. Exits non-zero on any failure.
// With ACCESS_KEY and SECRET_KEY set, ali-ons signs every request (its Channel.beforeRequest:
// RocketMQ's AclClientRPCHook signature plus an OnsChannel ext field), for servers with
// authentication on. PRODUCER_GROUP and CONSUMER_GROUP name the groups (defaults compat_pg and
// compat_cg).
const { Producer, Consumer, Message } = require('ali-ons');

const nameSrv = process.env.NAMESRV;
const topic = process.env.TOPIC;
const count = Number(process.env.COUNT || '50');
const timeoutMs = Number(process.env.TIMEOUT_MS || '90000');
// ali-ons asks for an HTTP client to look up name servers; with nameSrv set it is never used.
const httpclient = { request() { throw new Error('not used when nameSrv is set'); } };
const producerGroup = process.env.PRODUCER_GROUP || 'compat_pg';
const consumerGroup = process.env.CONSUMER_GROUP || 'compat_cg';
// ali-ons hands these options to every Channel (connection) it opens.
const credentials = process.env.ACCESS_KEY
  ? { accessKey: process.env.ACCESS_KEY, secretKey: process.env.SECRET_KEY }
  : {};
const logger = process.env.ONS_DEBUG ? console : { info() {}, warn() {}, debug() {}, error(...a) { console.error(...a); } };

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

async function main() {
  const timer = setTimeout(() => { emit({ event: 'timeout' }); process.exit(3); }, timeoutMs);
  const producer = new Producer({ httpclient, nameSrv, producerGroup, logger, ...credentials });
  await producer.ready();
  for (let i = 0; i < count; i++) {
    const tag = i % 2 === 0 ? 'TagA' : 'TagB';
    const msg = new Message(topic, tag, `compat-body-${i}`);
    msg.keys = [ `key-${i}` ];
    const r = await producer.send(msg);
    if (r.sendStatus !== 'SEND_OK') throw new Error(`send ${i}: ${r.sendStatus}`);
    emit({ event: 'sent', i, msgId: r.msgId, queueId: Number(r.messageQueue.queueId), offset: Number(r.queueOffset) });
  }
  await producer.close();

  const consumer = new Consumer({
    httpclient, nameSrv, consumerGroup, logger, ...credentials,
    consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET',
    rebalanceInterval: 2000,
  });
  const seen = new Set();
  await new Promise((resolve, reject) => {
    consumer.on('error', err => { console.error('consumer error', err && err.message); });
    consumer.subscribe(topic, 'TagA || TagB', async msg => {
      const body = msg.body.toString();
      emit({ event: 'received', body, tags: msg.tags, queueId: Number(msg.queueId), offset: Number(msg.queueOffset), keys: msg.keys });
      seen.add(body);
      if (seen.size === count) resolve();
    });
  });
  await consumer.close();
  clearTimeout(timer);
  emit({ event: 'done', received: seen.size });
  process.exit(0);
}

main().catch(err => { emit({ event: 'error', message: String(err && err.stack || err) }); process.exit(2); });
