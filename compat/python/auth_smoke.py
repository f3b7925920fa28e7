"""The official Apache RocketMQ 5 Python client (rocketmq-python-client on PyPI) with credentials
against a Rocketraft gRPC proxy started with --auth. Exits non-zero on any mismatch.

Usage: python3 auth_smoke.py PROXY_HOST:PORT TOPIC DENIED_TOPIC GROUP ACCESS_KEY SECRET_KEY

Expects (created by the test): the user ACCESS_KEY/SECRET_KEY with Pub and Sub on TOPIC, Sub on
GROUP, and only Sub on DENIED_TOPIC (so its route resolves but a send is forbidden).

1. With the right credentials a producer sends 3 messages and a SimpleConsumer receives and
   acks them (the client signs every call, Telemetry included).
2. The same producer's send to DENIED_TOPIC fails with ForbiddenException.
3. With a wrong secret key the client cannot send: its QueryRoute is refused (UNAUTHORIZED; the
   client reports a failed route fetch) or its send is (UnauthorizedException).
"""

import sys
import time

from rocketmq import (ClientConfiguration, Credentials, FilterExpression, Message,
                      Producer, SimpleConsumer)
from rocketmq.v5.exception import ForbiddenException, UnauthorizedException


def log(text):
    print(text, flush=True)


def message(topic, body):
    m = Message()
    m.topic = topic
    m.body = body
    m.tag = "auth"
    return m


def main():
    endpoint, topic, denied, group, ak, sk = sys.argv[1:7]
    config = ClientConfiguration(endpoint, Credentials(ak, sk))

    producer = Producer(config, (topic,))
    producer.startup()
    sent = set()
    try:
        for i in range(3):
            receipt = producer.send(message(topic, f"signed-{i}".encode()))
            assert receipt.message_id, "no message id"
            sent.add(receipt.message_id)
        log(f"signed: sent {len(sent)} messages")
        try:
            producer.send(message(denied, b"denied"))
            raise AssertionError("a send to the denied topic succeeded")
        except ForbiddenException as e:
            log(f"denied topic: ForbiddenException ({e})")
    finally:
        producer.shutdown()

    consumer = SimpleConsumer(config, group, {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        got = set()
        deadline = time.time() + 30
        while len(got) < len(sent) and time.time() < deadline:
            for msg in consumer.receive(16, 15):
                assert msg.message_id in sent, f"unexpected message {msg.message_id}"
                consumer.ack(msg)
                got.add(msg.message_id)
        assert got == sent, f"received {len(got)} of {len(sent)}"
        log(f"signed: received and acked {len(got)} messages")
    finally:
        consumer.shutdown()

    wrong = ClientConfiguration(endpoint, Credentials(ak, sk + "-wrong"))
    refused = Producer(wrong, (topic,))
    try:
        try:
            refused.startup()
            refused.send(message(topic, b"wrong key"))
            raise AssertionError("a send with a wrong secret key succeeded")
        except AssertionError:
            raise
        except UnauthorizedException as e:
            log(f"wrong secret key: UnauthorizedException ({e})")
        except Exception as e:  # noqa: BLE001
            # The client reports an UNAUTHORIZED QueryRoute as a failed route fetch.
            assert "route" in str(e), f"unexpected failure: {e!r}"
            log(f"wrong secret key: the route is refused ({e})")
    finally:
        try:
            refused.shutdown()
        except Exception:  # a producer that never started may refuse to shut down
            pass
    log("auth smoke: OK")


if __name__ == "__main__":
    main()
