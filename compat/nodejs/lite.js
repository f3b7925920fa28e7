'use strict';
// Lite topics with the official Apache RocketMQ 5 Node.js client (rocketmq-client-nodejs):
// a LitePushConsumer bound to the LITE topic `${TOPIC}` subscribes two of three lite topics, a
// Producer sends with liteTopic to all three, the consumer gets exactly its two lite topics'
// messages (each with its liteTopic); after unsubscribing one, only the other still arrives.
// The topic (message type LITE) and group `${GROUP}` exist before it runs. One JSON line per
// event; a failed check prints `{"event":"failed"}` and exits 1.
const { Producer, LitePushConsumerImpl, ConsumeResult } = require('rocketmq-client-nodejs');

const endpoints = process.env.PROXY;
const topic = process.env.TOPIC;
const consumerGroup = process.env.GROUP;

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
function check(ok, what, detail) {
  if (!ok) {
    emit({ event: 'failed', what, detail });
    throw new Error(`check failed: ${what}`);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Waits until `cond()` holds or `ms` passed; answers whether it held.
async function until(cond, ms) {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await sleep(100);
  return cond();
}

async function main() {
  const received = [];
  const consumer = new LitePushConsumerImpl({
    endpoints,
    consumerGroup,
    bindTopic: topic,
    messageListener: {
      async consume(v) {
        received.push({ lite: v.liteTopic, body: v.body.toString() });
        return ConsumeResult.SUCCESS;
      },
    },
  });
  await consumer.startup();
  await consumer.subscribeLite('lite-a');
  await consumer.subscribeLite('lite-b');
  emit({ event: 'subscribed', liteTopics: [...consumer.getLiteTopicSet()].sort() });

  const producer = new Producer({ endpoints, topic: [topic] });
  await producer.startup();
  for (const lite of ['lite-a', 'lite-b', 'lite-c']) {
    for (let i = 0; i < 3; i++) {
      await producer.send({ topic, liteTopic: lite, body: Buffer.from(`${lite}-${i}`) });
    }
  }
  emit({ event: 'sent', count: 9 });

  const got6 = await until(() => received.length >= 6, 60000);
  await sleep(3000); // anything more would arrive now
  const bodies = received.map((r) => r.body).sort();
  check(got6 && bodies.length === 6, 'six messages of the two subscribed lite topics', bodies);
  check(JSON.stringify(bodies) === JSON.stringify(
    ['lite-a-0', 'lite-a-1', 'lite-a-2', 'lite-b-0', 'lite-b-1', 'lite-b-2']),
  'exactly lite-a and lite-b', bodies);
  check(received.every((r) => r.body.startsWith(r.lite)), 'each message names its lite topic', received);
  emit({ event: 'lite_ok', bodies });

  await consumer.unsubscribeLite('lite-b');
  received.length = 0;
  await producer.send({ topic, liteTopic: 'lite-a', body: Buffer.from('lite-a-3') });
  await producer.send({ topic, liteTopic: 'lite-b', body: Buffer.from('lite-b-3') });
  await until(() => received.length >= 1, 30000);
  await sleep(3000);
  const after = received.map((r) => r.body).sort();
  check(JSON.stringify(after) === JSON.stringify(['lite-a-3']),
    'after unsubscribing lite-b only lite-a arrives', after);
  emit({ event: 'unsubscribe_ok', bodies: after });

  await producer.shutdown();
  await consumer.shutdown();
  emit({ event: 'done' });
  process.exit(0);
}

main().catch((e) => { emit({ event: 'error', error: String(e && e.stack || e) }); process.exit(1); });
