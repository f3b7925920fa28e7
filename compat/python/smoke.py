"""The official Apache RocketMQ 5 Python client (rocketmq-python-client on PyPI) against a
Rocketraft gRPC proxy. Exits non-zero on any mismatch.

Usage: python3 smoke.py PROXY_HOST:PORT PREFIX GROUP

Expects (created by the test): topics PREFIXNormal (no message type), PREFIXFifo (FIFO),
PREFIXDelay (DELAY), PREFIXTx (TRANSACTION); consumer groups GROUP (plain) and GROUP-fifo
(consumeMessageOrderly). The broker checks undecided transactions back within a few seconds.

1. Normal: 5 messages with tags, keys and properties; a SimpleConsumer receives them (bodies,
   tags, keys, properties, ids), extends one message's invisible duration, and acks every
   message, the extended one with its new handle; the old handle is refused.
   A PushConsumer of another group consumes the same 5; its listener fails one message once,
   which comes back with delivery attempt 2.
2. FIFO: two message groups of 4 messages each; the FIFO group receives each group in order.
3. Delay: a message 3 s ahead arrives no earlier; another is recalled and never arrives.
4. Transactions: one committed, one rolled back, one orphaned (never ended by the client) and
   committed by the TransactionChecker when the server asks; exactly the committed two arrive.
5. SQL92: a SimpleConsumer of group GROUP-sql filtering the normal messages with an SQL92
   expression over their properties receives exactly the matching two; one with an invalid
   expression is refused.
"""

import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression,
                      Message, MessageListener, Producer, PushConsumer, SimpleConsumer,
                      TransactionChecker, TransactionResolution)
from rocketmq.grpc_protocol import FilterType


def log(text):
    print(text, flush=True)


def receive_all(consumer, want, timeout=30, invisible=15, on_message=None):
    """Receives until `want` messages arrived (acking each); returns them in arrival order."""
    got = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        for msg in consumer.receive(16, invisible):
            if on_message is not None:
                on_message(msg)
            consumer.ack(msg)
            got.append(msg)
    return got


def expect_nothing(consumer, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        extra = consumer.receive(16, 15)
        assert not extra, f"unexpected messages: {[m.body for m in extra]}"


def normal(config, topic, group):
    producer = Producer(config, (topic,))
    producer.startup()
    sent = {}
    try:
        for i in range(5):
            m = Message()
            m.topic = topic
            m.body = f"py-body-{i}".encode()
            m.tag = f"tag{i % 2}"
            m.keys = f"key-{i}"
            m.add_property("color", f"c{i}")
            receipt = producer.send(m)
            assert receipt.message_id, "no message id"
            sent[receipt.message_id] = i
    finally:
        producer.shutdown()
    log(f"normal: sent {len(sent)} messages")

    consumer = SimpleConsumer(config, group, {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        got = {}
        extended = None
        deadline = time.time() + 30
        while len(got) < len(sent) and time.time() < deadline:
            for msg in consumer.receive(16, 15):
                i = sent.get(msg.message_id)
                assert i is not None, f"unexpected message id {msg.message_id}"
                assert msg.body == f"py-body-{i}".encode(), msg.body
                assert msg.tag == f"tag{i % 2}", msg.tag
                assert f"key-{i}" in msg.keys, msg.keys
                assert msg.properties.get("color") == f"c{i}", msg.properties
                assert msg.topic == topic, msg.topic
                if extended is None:
                    old = msg.receipt_handle
                    consumer.change_invisible_duration(msg, 30)
                    assert msg.receipt_handle != old, "no new receipt handle"
                    extended = (msg, old)
                consumer.ack(msg)
                got[msg.message_id] = i
        assert len(got) == len(sent), f"received {len(got)} of {len(sent)}"
        # The handle from before the change was replaced: acking with it is refused.
        msg, old = extended
        msg.receipt_handle = old
        try:
            consumer.ack(msg)
            raise AssertionError("the pre-change receipt handle still acked")
        except AssertionError:
            raise
        except Exception as e:  # the client raises on the INVALID_RECEIPT_HANDLE status
            log(f"normal: the old handle is refused ({type(e).__name__})")
        log(f"normal: received and acked {len(got)} messages (one after changing its invisible duration)")
    finally:
        consumer.shutdown()


class FailOnce(MessageListener):
    """Fails the first delivery of py-body-2, accepts everything else."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deliveries = {}
        self.done = threading.Event()

    def consume(self, message):
        body = message.body.decode()
        with self.lock:
            self.deliveries.setdefault(body, []).append(message.delivery_attempt)
            if len(self.deliveries) == 5 and len(self.deliveries.get("py-body-2", [])) >= 2:
                self.done.set()
        if body == "py-body-2" and message.delivery_attempt == 1:
            return ConsumeResult.FAILURE
        return ConsumeResult.SUCCESS


def push(config, topic, group):
    listener = FailOnce()
    consumer = PushConsumer(config, group, listener, {topic: FilterExpression("*")})
    consumer.startup()
    try:
        assert listener.done.wait(60), f"push consumer saw {listener.deliveries}"
        attempts = listener.deliveries["py-body-2"]
        assert attempts[:2] == [1, 2], f"redelivery attempts {attempts}"
        log(f"push: 5 messages consumed, the failed one redelivered (attempts {attempts[:2]})")
    finally:
        consumer.shutdown()


def fifo(config, topic, group):
    producer = Producer(config, (topic,))
    producer.startup()
    try:
        for i in range(4):
            for g in ("order-a", "order-b"):
                m = Message()
                m.topic = topic
                m.body = f"{g}-{i}".encode()
                m.message_group = g
                m.tag = "fifo"
                producer.send(m)
    finally:
        producer.shutdown()
    consumer = SimpleConsumer(config, group, {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        got = receive_all(consumer, 8)
        assert len(got) == 8, f"received {len(got)} of 8 FIFO messages"
        for g in ("order-a", "order-b"):
            seq = [m.body.decode() for m in got if m.message_group == g]
            assert seq == [f"{g}-{i}" for i in range(4)], f"group {g} out of order: {seq}"
        log("fifo: 8 messages, each message group in send order")
    finally:
        consumer.shutdown()


def delay(config, topic, group):
    producer = Producer(config, (topic,))
    producer.startup()
    try:
        # The Python client takes the delivery time in seconds (it fills Timestamp.seconds)
        # and reports received ones in milliseconds.
        due = (int(time.time()) + 3) * 1000
        m = Message()
        m.topic = topic
        m.body = b"delayed"
        m.delivery_timestamp = due // 1000
        kept = producer.send(m)
        r = Message()
        r.topic = topic
        r.body = b"recalled"
        r.delivery_timestamp = due // 1000
        receipt = producer.send(r)
        assert receipt.recall_handle, "no recall handle for a delayed message"
        recalled = producer.recall_message(topic, receipt.recall_handle)
        assert recalled == receipt.message_id, (recalled, receipt.message_id)
    finally:
        producer.shutdown()
    consumer = SimpleConsumer(config, group, {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        got = receive_all(consumer, 1, timeout=20)
        arrived = time.time() * 1000
        assert [m.body for m in got] == [b"delayed"], [m.body for m in got]
        assert got[0].message_id == kept.message_id
        assert arrived >= due, f"delivered {due - arrived:.0f} ms early"
        assert got[0].delivery_timestamp == due, (got[0].delivery_timestamp, due)
        expect_nothing(consumer, 4)
        log(f"delay: delivered {arrived - due:.0f} ms after its time; the recalled one never came")
    finally:
        consumer.shutdown()


class Checker(TransactionChecker):
    def __init__(self):
        self.asked = threading.Event()

    def check(self, message):
        assert message.body == b"tx-orphan", message.body
        self.asked.set()
        return TransactionResolution.COMMIT


def transactions(config, topic, group):
    checker = Checker()
    producer = Producer(config, (topic,), checker)
    producer.startup()
    try:
        for body, decide in ((b"tx-commit", "commit"), (b"tx-rollback", "rollback"),
                             (b"tx-orphan", None)):
            tx = producer.begin_transaction()
            m = Message()
            m.topic = topic
            m.body = body
            m.keys = body.decode()
            receipt = producer.send(m, tx)
            assert receipt.transaction_id, "no transaction id"
            if decide == "commit":
                tx.commit()
            elif decide == "rollback":
                tx.rollback()
        assert checker.asked.wait(60), "the server never asked about the orphaned transaction"
        log("transactions: the server asked the checker about the orphan; it committed")
        consumer = SimpleConsumer(config, group, {topic: FilterExpression("*")},
                                  await_duration=5)
        consumer.startup()
        try:
            got = receive_all(consumer, 2, timeout=30)
            bodies = sorted(m.body for m in got)
            assert bodies == [b"tx-commit", b"tx-orphan"], bodies
            expect_nothing(consumer, 3)
            log("transactions: exactly the committed and the checked-and-committed arrived")
        finally:
            consumer.shutdown()
    finally:
        producer.shutdown()


def sql(config, topic, group):
    expression = "color IN ('c1', 'c4') AND TAGS IS NOT NULL"
    consumer = SimpleConsumer(config, group, {topic: FilterExpression(expression, FilterType.SQL)},
                              await_duration=5)
    consumer.startup()
    try:
        got = receive_all(consumer, 2)
        bodies = sorted(m.body.decode() for m in got)
        assert bodies == ["py-body-1", "py-body-4"], bodies
        expect_nothing(consumer, 3)
        log(f"sql: received exactly {bodies} with {expression!r}")
    finally:
        consumer.shutdown()
    bad = SimpleConsumer(config, f"{group}-bad", {topic: FilterExpression("color >", FilterType.SQL)},
                         await_duration=2)
    bad.startup()
    try:
        try:
            bad.receive(16, 15)
            raise AssertionError("an invalid SQL92 expression was accepted")
        except AssertionError:
            raise
        except Exception as e:  # the client raises on the ILLEGAL_FILTER_EXPRESSION status
            assert "ILLEGAL_FILTER_EXPRESSION" in str(e) or "illegal" in str(e).lower(), e
            log(f"sql: an invalid expression is refused ({type(e).__name__})")
    finally:
        bad.shutdown()


def main():
    endpoint, prefix, group = sys.argv[1], sys.argv[2], sys.argv[3]
    config = ClientConfiguration(endpoint, Credentials())
    normal(config, f"{prefix}Normal", group)
    push(config, f"{prefix}Normal", f"{group}-push")
    fifo(config, f"{prefix}Fifo", f"{group}-fifo")
    delay(config, f"{prefix}Delay", group)
    transactions(config, f"{prefix}Tx", group)
    sql(config, f"{prefix}Normal", f"{group}-sql")
    log("all checks passed")


if __name__ == "__main__":
    main()
