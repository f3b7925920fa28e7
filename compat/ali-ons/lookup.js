'use strict';
// Message lookup by key and by id with ali-ons (a third-party RocketMQ Remoting client).
// ali-ons ships no queryMessage/viewMessage API (its MQClientAPI.viewMessage is commented out),
// so this script uses ali-ons's own layers: its Producer sends COUNT messages to TOPIC with
// KEYS `order-<i> lookup-all` and a UNIQ_KEY (set as the Java client's MessageClientIDSetter
// does: ali-ons leaves it out), then its RemotingCommand codec and MQClient connection send
// QUERY_MESSAGE (12) by key, QUERY_MESSAGE with `_UNIQUE_KEY_QUERY=true` by unique id, and
// VIEW_MESSAGE_BY_ID (33) for an offset message id decoded with ali-ons's decodeMessageId, and
// its MessageDecoder decodes the answers. Prints one JSON line per event.
const crypto = require('crypto');
const ByteBuffer = require('byte');
const { Producer, Message } = require('ali-ons');
const RemotingCommand = require('ali-ons/lib/protocol/command/remoting_command');
const MessageDecoder = require('ali-ons/lib/message/message_decoder');

const nameSrv = process.env.NAMESRV;
const topic = process.env.TOPIC;
const count = Number(process.env.COUNT || '10');
const httpclient = { request() { throw new Error('not used when nameSrv is set'); } };
const logger = process.env.ONS_DEBUG ? console : { info() {}, warn() {}, debug() {}, error(...a) { console.error(...a); } };

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

function uniqueId() {
  return crypto.randomBytes(16).toString('hex').toUpperCase();
}

function describe(m) {
  return {
    topic: m.topic,
    body: m.body.toString(),
    keys: m.keys,
    uniq: m.properties.UNIQ_KEY,
    msgId: m.msgId,
    queueOffset: Number(m.queueOffset),
  };
}

async function query(client, addr, key, unique) {
  const header = {
    topic,
    key,
    maxNum: 32,
    beginTimestamp: 0,
    endTimestamp: Date.now() + 60000,
  };
  if (unique) header._UNIQUE_KEY_QUERY = 'true';
  const response = await client.invoke(addr, RemotingCommand.createRequestCommand(12, header), 5000);
  const messages = response.code === 0 && response.body
    ? MessageDecoder.decodes(ByteBuffer.wrap(response.body)).map(describe)
    : [];
  return { code: response.code, remark: response.remark, messages,
    indexLastUpdatePhyoffset: response.extFields && response.extFields.indexLastUpdatePhyoffset };
}

async function main() {
  const timer = setTimeout(() => { emit({ event: 'timeout' }); process.exit(3); }, 60000);
  const producer = new Producer({ httpclient, nameSrv, producerGroup: 'compat_lookup_pg', logger });
  await producer.ready();
  const sent = [];
  for (let i = 0; i < count; i++) {
    const msg = new Message(topic, 'TagL', `lookup-body-${i}`);
    msg.keys = [ `order-${i}`, 'lookup-all' ];
    msg.properties.UNIQ_KEY = uniqueId();
    const r = await producer.send(msg);
    if (r.sendStatus !== 'SEND_OK') throw new Error(`send ${i}: ${r.sendStatus}`);
    sent.push({ i, msgId: r.msgId, uniq: msg.properties.UNIQ_KEY });
    emit({ event: 'sent', i, msgId: r.msgId, uniq: msg.properties.UNIQ_KEY });
  }
  const client = producer._mqClient;
  const target = sent[3];
  const { address, offset } = MessageDecoder.decodeMessageId(target.msgId);
  emit({ event: 'decoded', address, offset: offset.toString() });

  // The index follows the CommitLog in the background: wait (up to 10 s) until it holds
  // every message sent, then look them up.
  let all;
  for (let attempt = 0; attempt < 100; attempt++) {
    all = await query(client, address, 'lookup-all', false);
    if (all.code === 0 && all.messages.length >= count) break;
    await new Promise(r => setTimeout(r, 100));
  }
  const byKey = await query(client, address, 'order-3', false);
  emit({ event: 'by_key', ...byKey });
  emit({ event: 'by_shared_key', code: all.code, count: all.messages.length });
  const byUniq = await query(client, address, target.uniq, true);
  emit({ event: 'by_unique_key', ...byUniq });
  const missing = await query(client, address, 'no-such-key', false);
  emit({ event: 'missing', code: missing.code, remark: missing.remark });

  const view = await client.invoke(address,
    RemotingCommand.createRequestCommand(33, { offset: offset.toString() }), 5000);
  const viewed = view.code === 0 ? describe(MessageDecoder.decode(ByteBuffer.wrap(view.body))) : null;
  emit({ event: 'view', code: view.code, remark: view.remark, message: viewed });

  await producer.close();
  clearTimeout(timer);
  emit({ event: 'done' });
  process.exit(0);
}

main().catch(err => { emit({ event: 'error', message: String(err && err.stack || err) }); process.exit(2); });
