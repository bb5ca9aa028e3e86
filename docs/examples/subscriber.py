"""Prints product-service's events as CloudEvents, from the first: pip install nats-py cloudevents
python subscriber.py [--max N]   (NATS_URL, EVENTS_NAMESPACE as the services read them)"""
import asyncio, os, sys
import nats
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event

async def main(limit):
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    subject = os.environ.get("EVENTS_NAMESPACE", "shop") + ".product.events.>"
    sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
    for _ in range(limit):
        msg = await sub.next_msg(timeout=None)
        event = from_binary_event(HTTPMessage(dict(msg.headers or {}), msg.data))  # decodes ce-*
        print(event.get_type(), event.get_subject(), event.get_data(), flush=True)
    await nc.close()

asyncio.run(main(int(sys.argv[2]) if sys.argv[1:2] == ["--max"] else sys.maxsize))
