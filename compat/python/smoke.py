"""The official Apache RocketMQ 5 Python client (rocketmq-python-client on PyPI) against a
Rocketraft proxy: a producer sends normal and FIFO messages with keys, tags and properties; a
SimpleConsumer receives them, changes one message's invisible duration, then acks everything
(the extended one with its new handle). Exits non-zero on any mismatch.

Usage: python3 smoke.py PROXY_HOST:PORT TOPIC GROUP
"""

import sys
import time

from rocketmq import (ClientConfiguration, Credentials, FilterExpression, Message,
                      Producer, SimpleConsumer)


def main():
    endpoint, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
    config = ClientConfiguration(endpoint, Credentials())
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
            if i == 4:
                m.message_group = "fifo-group"
            receipt = producer.send(m)
            sent[receipt.message_id] = i
        print(f"sent {len(sent)} messages")
    finally:
        producer.shutdown()

    consumer = SimpleConsumer(config, group, {topic: FilterExpression("*")}, await_duration=5)
    consumer.startup()
    try:
        got = {}
        deadline = time.time() + 30
        extended = None
        while len(got) < len(sent) and time.time() < deadline:
            for msg in consumer.receive(16, 15):
                i = sent.get(msg.message_id)
                assert i is not None, f"unexpected message id {msg.message_id}"
                assert msg.body == f"py-body-{i}".encode(), msg.body
                assert msg.tag == f"tag{i % 2}", msg.tag
                assert f"key-{i}" in msg.keys, msg.keys
                assert msg.properties.get("color") == f"c{i}", msg.properties
                if extended is None:
                    consumer.change_invisible_duration(msg, 30)
                    extended = msg
                consumer.ack(msg)
                got[msg.message_id] = i
        assert len(got) == len(sent), f"received {len(got)} of {len(sent)}"
        print(f"received and acked {len(got)} messages")
    finally:
        consumer.shutdown()


if __name__ == "__main__":
    main()
