'use strict';
// The official Apache RocketMQ 5 Node.js client (rocketmq-client-nodejs) against a Rocketraft
// gRPC proxy: its Producer sends COUNT messages to TOPIC, and its PushConsumer of GROUP receives
// them. The PushConsumer checks each message's body_digest and discards one it cannot match, so
// every message arriving shows the proxy sends the digest the client expects. One JSON line per
// event; exit 0 when all arrived, 3 on timeout.
const { Producer, PushConsumer, ConsumeResult } = require('rocketmq-client-nodejs');

const endpoints = process.env.PROXY;
const topic = process.env.TOPIC;
const group = process.env.GROUP;
const count = Number(process.env.COUNT || '10');

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

async function main() {
  const received = new Set();
  let done;
  const all = new Promise((resolve) => { done = resolve; });
  const consumer = new PushConsumer({
    namespace: '',
    endpoints,
    consumerGroup: group,
    subscriptions: new Map([[topic, '*']]),
    messageListener: {
      async consume(view) {
        const body = view.body.toString('utf-8');
        received.add(body);
        emit({ event: 'received', body, messageId: view.messageId });
        if (received.size >= count) done();
        return ConsumeResult.SUCCESS;
      },
    },
  });
  await consumer.startup();
  const producer = new Producer({ endpoints });
  await producer.startup();
  for (let i = 0; i < count; i++) {
    const receipt = await producer.send({ topic, tag: 'node', body: Buffer.from(`node-${i}`) });
    emit({ event: 'sent', i, messageId: receipt.messageId });
  }
  const timer = setTimeout(() => { emit({ event: 'timeout', received: received.size }); process.exit(3); }, 60000);
  await all;
  clearTimeout(timer);
  emit({ event: 'done', received: received.size });
  await producer.shutdown();
  await consumer.shutdown();
  process.exit(0);
}

main().catch((e) => { emit({ event: 'error', error: String(e && e.stack || e) }); process.exit(2); });
