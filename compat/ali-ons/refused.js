'use strict';
// ali-ons requests the servers must refuse: signed with a wrong secret key, or by a user whose
// ACL does not allow them. Uses ali-ons' own request API (MQClientAPI: the class its producer
// and consumer send through, signing in Channel.beforeRequest) so that a request can go straight
// to the broker as well as to the NameServer, which refuses the route lookup first for a wrong
// key. Prints one JSON line per attempt: {event: 'refused', where, code, message} or
// {event: 'accepted', where}. Exits non-zero only when the script itself fails.
//
// Environment: NAMESRV, BROKER (address), BROKER_NAME, TOPIC, GROUP (consumer group),
// ACCESS_KEY, SECRET_KEY, BODY (of the message it tries to send).
const MQClientAPI = require('ali-ons/lib/mq_client_api');
const Message = require('ali-ons/lib/message/message');
const MessageDecoder = require('ali-ons/lib/message/message_decoder');

const env = process.env;
const httpclient = { request() { throw new Error('not used when nameSrv is set'); } };
const logger = { info() {}, warn() {}, debug() {}, error() {} };

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

async function attempt(where, call) {
  try {
    await call();
    emit({ event: 'accepted', where });
  } catch (err) {
    emit({ event: 'refused', where, code: err && err.code, name: err && err.name, message: String(err && err.message) });
  }
}

async function main() {
  const timer = setTimeout(() => { emit({ event: 'timeout' }); process.exit(3); }, 60000);
  const api = new MQClientAPI({
    httpclient, nameSrv: env.NAMESRV, logger,
    accessKey: env.ACCESS_KEY, secretKey: env.SECRET_KEY,
  });
  await api.ready();
  await attempt('namesrv-route', () => api.getTopicRouteInfoFromNameServer(env.TOPIC, 5000));
  const msg = new Message(env.TOPIC, 'TagA', env.BODY);
  const header = {
    producerGroup: 'refused_pg',
    topic: env.TOPIC,
    defaultTopic: 'TBW102',
    defaultTopicQueueNums: 4,
    queueId: 0,
    sysFlag: 0,
    bornTimestamp: Date.now(),
    flag: msg.flag,
    properties: MessageDecoder.messageProperties2String(msg.properties),
    reconsumeTimes: 0,
    unitMode: false,
  };
  await attempt('broker-send', () => api.sendMessage(env.BROKER, env.BROKER_NAME, msg, header, 5000));
  await attempt('broker-offset', () => api.queryConsumerOffset(env.BROKER, {
    consumerGroup: env.GROUP, topic: env.TOPIC, queueId: 0,
  }, 5000));
  await api.close();
  clearTimeout(timer);
  emit({ event: 'done' });
  process.exit(0);
}

main().catch(err => { emit({ event: 'error', message: String(err && err.stack || err) }); process.exit(2); });
