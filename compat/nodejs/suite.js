'use strict';
// The official Apache RocketMQ 5 Node.js client (rocketmq-client-nodejs) against a Rocketraft
// gRPC proxy, in every client type it has: Producer (normal, FIFO, delay with recall,
// transactions committed, rolled back and checked back), SimpleConsumer (receive, change
// invisible duration, ack) and PushConsumer. Topics `${PREFIX}Normal|Fifo|Delay|Tx` and the
// groups `${GROUP}` and `${GROUP}-fifo` (FIFO) exist before it runs. One JSON line per event;
// a failed check prints `{"event":"failed"}` and exits 1.
const {
  Producer, SimpleConsumer, PushConsumer, ConsumeResult, FilterExpression,
} = require('rocketmq-client-nodejs');
const { TransactionResolution } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

const endpoints = process.env.PROXY;
const prefix = process.env.PREFIX;
const group = process.env.GROUP;

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
function check(ok, what, detail) {
  if (!ok) {
    emit({ event: 'failed', what, detail });
    throw new Error(`check failed: ${what}`);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function simpleConsumer(topic, consumerGroup) {
  const consumer = new SimpleConsumer({
    endpoints,
    consumerGroup,
    subscriptions: new Map([[topic, new FilterExpression('*')]]),
    awaitDuration: 3000,
  });
  await consumer.startup();
  return consumer;
}

// Receives until `want` messages arrived or `ms` passed; `onMessage` decides (ack or not).
async function receiveAll(consumer, want, ms, onMessage) {
  const got = [];
  const deadline = Date.now() + ms;
  while (got.length < want && Date.now() < deadline) {
    let views = [];
    try {
      views = await consumer.receive(16, 15000);
    } catch (e) {
      // MESSAGE_NOT_FOUND after the long poll: nothing yet.
      if (!String(e).includes('MESSAGE_NOT_FOUND') && !String(e).includes('no new message')) throw e;
    }
    for (const v of views) {
      got.push(v);
      await onMessage(v);
    }
  }
  return got;
}

async function normal() {
  const topic = `${prefix}Normal`;
  const producer = new Producer({ endpoints, topic: [topic] });
  await producer.startup();
  const sent = new Map();
  for (let i = 0; i < 5; i++) {
    const receipt = await producer.send({
      topic, tag: 'TagN', keys: [`key-${i}`], body: Buffer.from(`node-normal-${i}`),
      properties: new Map([['origin', `node-${i}`]]),
    });
    sent.set(receipt.messageId, i);
  }
  emit({ event: 'normal_sent', count: sent.size });
  const consumer = await simpleConsumer(topic, group);
  let renewed = false;
  const got = await receiveAll(consumer, 5, 30000, async (v) => {
    const i = sent.get(v.messageId);
    check(i !== undefined, 'a sent message id', v.messageId);
    check(v.body.toString() === `node-normal-${i}`, 'body', v.body.toString());
    check(v.tag === 'TagN', 'tag', v.tag);
    check(v.keys.length === 1 && v.keys[0] === `key-${i}`, 'keys', v.keys);
    check(v.properties.get('origin') === `node-${i}`, 'properties', [...v.properties]);
    if (!renewed) {
      // The client takes the renewed receipt handle; the ack below uses it.
      await consumer.changeInvisibleDuration(v, 20000);
      renewed = true;
    }
    await consumer.ack(v);
  });
  check(got.length === 5, 'five messages received', got.length);
  const again = await receiveAll(consumer, 1, 4000, async () => {});
  check(again.length === 0, 'nothing comes back after the acks', again.map((v) => v.messageId));
  emit({ event: 'normal_ok', received: got.length, renewed });

  // A PushConsumer of another group consumes the same five; one fails once and comes back.
  const consumed = new Map();
  let failedOnce = false;
  let done;
  const all = new Promise((r) => { done = r; });
  const push = new PushConsumer({
    endpoints,
    consumerGroup: `${group}-push`,
    subscriptions: new Map([[topic, '*']]),
    messageListener: {
      async consume(v) {
        const body = v.body.toString();
        if (!failedOnce) {
          failedOnce = true;
          emit({ event: 'push_failing_once', body });
          return ConsumeResult.FAILURE;
        }
        consumed.set(body, (consumed.get(body) || 0) + 1);
        if (consumed.size >= 5) done();
        return ConsumeResult.SUCCESS;
      },
    },
  });
  await push.startup();
  const timer = sleep(60000).then(() => 'timeout');
  const outcome = await Promise.race([all.then(() => 'done'), timer]);
  check(outcome === 'done', 'the push consumer consumed all five', [...consumed.keys()]);
  emit({ event: 'push_ok', consumed: consumed.size });
  await push.shutdown();
  await consumer.shutdown();
  await producer.shutdown();
}

async function fifo() {
  const topic = `${prefix}Fifo`;
  const producer = new Producer({ endpoints, topic: [topic] });
  await producer.startup();
  for (let i = 0; i < 8; i++) {
    await producer.send({
      topic, messageGroup: `g${i % 2}`, body: Buffer.from(`node-fifo-${i}`),
    });
  }
  const consumer = await simpleConsumer(topic, `${group}-fifo`);
  const order = { g0: [], g1: [] };
  const got = await receiveAll(consumer, 8, 60000, async (v) => {
    check(v.messageGroup === 'g0' || v.messageGroup === 'g1', 'message group', v.messageGroup);
    order[v.messageGroup].push(Number(v.body.toString().split('-')[2]));
    await consumer.ack(v);
  });
  check(got.length === 8, 'eight FIFO messages', got.length);
  check(JSON.stringify(order.g0) === '[0,2,4,6]' && JSON.stringify(order.g1) === '[1,3,5,7]',
    'each message group in send order', order);
  emit({ event: 'fifo_ok', order });
  await consumer.shutdown();
  await producer.shutdown();
}

async function delay() {
  const topic = `${prefix}Delay`;
  const producer = new Producer({ endpoints, topic: [topic] });
  await producer.startup();
  const sentAt = Date.now();
  await producer.send({
    topic, body: Buffer.from('node-delay-kept'), deliveryTimestamp: new Date(sentAt + 3000),
  });
  const recalled = await producer.send({
    topic, body: Buffer.from('node-delay-recalled'), deliveryTimestamp: new Date(sentAt + 5000),
  });
  check(recalled.recallHandle, 'a delayed send answers a recall handle', recalled);
  const receipt = await producer.recallMessage(topic, recalled.recallHandle);
  check(receipt.messageId === recalled.messageId, 'the recall names the message',
    [receipt.messageId, recalled.messageId]);
  const consumer = await simpleConsumer(topic, group);
  const got = await receiveAll(consumer, 2, 12000, async (v) => {
    emit({ event: 'delay_received', body: v.body.toString(), afterMs: Date.now() - sentAt });
    check(v.body.toString() === 'node-delay-kept', 'only the kept one arrives', v.body.toString());
    check(Date.now() - sentAt >= 2900, 'not before its delivery time', Date.now() - sentAt);
    await consumer.ack(v);
  });
  check(got.length === 1, 'the recalled one never came', got.map((v) => v.body.toString()));
  emit({ event: 'delay_ok' });
  await consumer.shutdown();
  await producer.shutdown();
}

async function transactions() {
  const topic = `${prefix}Tx`;
  const checked = [];
  const producer = new Producer({
    endpoints,
    topic: [topic],
    checker: {
      async check(view) {
        checked.push(view.body.toString());
        emit({ event: 'tx_checked', body: view.body.toString() });
        return TransactionResolution.COMMIT;
      },
    },
  });
  await producer.startup();
  const commit = producer.beginTransaction();
  await producer.send({ topic, body: Buffer.from('node-tx-commit') }, commit);
  await commit.commit();
  const rollback = producer.beginTransaction();
  await producer.send({ topic, body: Buffer.from('node-tx-rollback') }, rollback);
  await rollback.rollback();
  // Left undecided: the broker checks it back through the producer's telemetry stream.
  const orphan = producer.beginTransaction();
  await producer.send({ topic, body: Buffer.from('node-tx-orphan') }, orphan);
  const consumer = await simpleConsumer(topic, group);
  const bodies = [];
  await receiveAll(consumer, 2, 40000, async (v) => {
    bodies.push(v.body.toString());
    await consumer.ack(v);
  });
  const extra = await receiveAll(consumer, 1, 4000, async (v) => { bodies.push(v.body.toString()); });
  check(checked.includes('node-tx-orphan'), 'the server asked the checker about the orphan', checked);
  check(JSON.stringify(bodies.sort()) === JSON.stringify(['node-tx-commit', 'node-tx-orphan']),
    'exactly the committed and the checked-and-committed arrived', bodies);
  emit({ event: 'tx_ok', bodies, extra: extra.length });
  await consumer.shutdown();
  await producer.shutdown();
}

async function main() {
  await normal();
  await fifo();
  await delay();
  await transactions();
  emit({ event: 'done' });
  process.exit(0);
}

main().catch((e) => { emit({ event: 'error', error: String(e && e.stack || e) }); process.exit(1); });
