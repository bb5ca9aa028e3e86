"""A foreign subscriber: reads every message of both event streams as someone outside this code
base would, with nats-py, the CloudEvents SDK and the services' AsyncAPI documents, and fails
on any message that is not the event the documents promise.

Each message must be a CloudEvents 1.0 event in the NATS binding's binary content mode (every
attribute a `ce-` header, percent-encoded; the payload is the body) carrying id, source, type,
subject, time, datacontenttype and dataschema. Its dataschema must name a message of the
producer's document; its payload and its headers (as on the wire) must validate against that
message's schemas, and its NATS subject must be one of that message's channel addresses. Where
the consuming service's document describes the same dataschema, the payload must also validate
against that view. Every event type a document sends must appear in its stream, and the legacy
`Es-` headers must be absent or present as the producer was configured.

    python subscriber.py --namespace NS --document product-service=FILE \
        --document order-service=FILE --expect product=N --expect order=M \
        --legacy-headers product=absent --legacy-headers order=present \
        [--expect-attribute correlationid=VALUE ...]

Prints a line per stream and `CONTRACT-SUMMARY ...`; exits 1 on any failure.
"""

import argparse
import asyncio
import json
import sys
import uuid

import nats
from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

import documents

# Stream label (`<ns>_<label>_events`, subjects `<ns>.<label>.events.>`) -> producer.
STREAMS = {"product": "product-service", "order": "order-service"}
# What a subscriber needs of every event; the spec makes only the first four required.
REQUIRED = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype",
            "dataschema"]
SHOWN_FAILURES = 10


class Stats:
    def __init__(self):
        self.messages = 0
        self.event_ids = set()
        self.republished = 0
        self.payloads_valid = 0
        self.headers_valid = 0
        self.consumer_views_valid = 0
        self.types = set()
        self.with_legacy = 0


def header(headers, name):
    """A header by name, as NATS compares them: case-insensitively."""
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def check(msg, service, docs, legacy, stats):
    """The problems of one message (none: it is the event the documents promise) and the
    event the SDK read from it, if it read one."""
    headers = dict(msg.headers or {})
    es = sorted(k for k in headers if k.lower().startswith("es-"))
    stats.with_legacy += bool(es)
    attributes = {k.lower()[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
    if not attributes:
        return ["no ce- headers: not a CloudEvent in binary content mode"], None
    missing = [a for a in REQUIRED if not attributes.get(a)]
    if missing:
        return [f"attributes missing: {', '.join(missing)}"], None
    problems = []
    if legacy == "absent" and es:
        problems.append(f"legacy headers present though switched off: {', '.join(es)}")
    if legacy == "present" and not es:
        problems.append("no legacy Es- headers though the producer sends them by default")

    # The SDK's binary-mode reader percent-decodes each ce- value once, as the binding says
    # receivers must (so the raw values go in: decoding first would decode twice).
    try:
        event = http.from_binary(http.HTTPMessage(headers=headers, body=msg.data), JSONFormat())
    except Exception as e:  # noqa: BLE001 - the SDK's own refusal is the finding
        return problems + [f"the CloudEvents SDK refuses it: {e}"], None
    try:
        data = json.loads(msg.data)
    except ValueError as e:
        return problems + [f"the body is not JSON: {e}"], event
    if not isinstance(data, dict) or event.get_data() != data:
        problems.append("the SDK's data is not the body's JSON object")
    if event.get_specversion() != "1.0":
        problems.append(f"specversion {event.get_specversion()!r}, not 1.0")
    if event.get_source() != f"/{service}":
        problems.append(f"source {event.get_source()!r}, not '/{service}'")
    if event.get_datacontenttype() != "application/json":
        problems.append(f"datacontenttype {event.get_datacontenttype()!r}")
    try:
        uuid.UUID(event.get_id())
    except ValueError:
        problems.append(f"id {event.get_id()!r} is not a uuid")
    stored_type = event.get_type().rpartition(".")[2]
    if event.get_type() != f"eventsourced.{service}.{stored_type}":
        problems.append(f"type {event.get_type()!r} is not eventsourced.{service}.<EventType>")
    version = event.get_attributes().get("schemaversion")
    expected_schema = f"urn:eventsourced:{service}:{stored_type}:{version}"
    if event.get_dataschema() != expected_schema:
        problems.append(f"dataschema {event.get_dataschema()!r}, expected {expected_schema!r}")
    republished = event.get_attributes().get("republished")
    msg_id = header(headers, "Nats-Msg-Id")
    if not republished and msg_id != event.get_id():
        problems.append(f"Nats-Msg-Id {msg_id!r} is not the event id")

    message = docs[service].message(event.get_dataschema())
    if message is None:
        return problems + [f"{service}'s document has no message with ce-dataschema "
                           f"{event.get_dataschema()}"], event
    if not message.address_matches(msg.subject):
        problems.append(f"subject {msg.subject} is none of {message.key}'s channel addresses "
                        f"{message.addresses}")
    for name, validator, instance, counter in [
        ("payload", message.payload, data, "payloads_valid"),
        ("headers", message.headers, headers, "headers_valid"),
    ]:
        if validator is None:
            problems.append(f"{message.key} has no {name} schema")
            continue
        found = documents.errors(validator, instance)
        problems += [f"{name} against {service}'s {message.key}: {e}" for e in found]
        if not found:
            setattr(stats, counter, getattr(stats, counter) + 1)
    for other, doc in docs.items():
        view = doc.message(event.get_dataschema()) if other != service else None
        if view is not None and view.payload is not None:
            found = documents.errors(view.payload, data)
            problems += [f"payload against {other}'s view {view.key}: {e}" for e in found]
            stats.consumer_views_valid += not found

    stats.event_ids.add(event.get_id())
    stats.republished += bool(republished)
    stats.types.add(event.get_type())
    return problems, event


async def read_stream(js, stream, subjects, expected, wait):
    """Every message of `stream` once it holds `expected` (at least one), in order, through an
    ephemeral pull consumer from the start that acknowledges nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        info = await js.stream_info(stream)
        if info.state.messages >= max(expected, 1):
            break
        if loop.time() > deadline:
            raise SystemExit(f"contract: {stream} holds {info.state.messages} messages after "
                             f"{wait} s, expected {max(expected, 1)} (the events in the producer's store)")
        await asyncio.sleep(0.2)
    last = info.state.last_seq
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                            inactive_threshold=60.0)
    sub = await js.pull_subscribe(subjects, stream=stream, config=config)
    messages = []
    while not messages or messages[-1].metadata.sequence.stream < last:
        messages += await sub.fetch(batch=256, timeout=5)
    await sub.unsubscribe()
    return messages


def pairs(values, what):
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            raise SystemExit(f"contract: {what} {value!r} is not NAME=VALUE")
        out[key] = rest
    return out


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--document", action="append", default=[], metavar="SERVICE=FILE")
    parser.add_argument("--expect", action="append", default=[], metavar="STREAM=EVENTS")
    parser.add_argument("--legacy-headers", action="append", default=[],
                        metavar="STREAM=absent|present")
    parser.add_argument("--expect-attribute", action="append", default=[],
                        metavar="NAME=VALUE", help="some event carries this attribute value")
    parser.add_argument("--wait", type=float, default=30, help="seconds for the relays")
    args = parser.parse_args()
    docs = documents.load(args.document)
    if set(docs) != set(STREAMS.values()):
        raise SystemExit(f"contract: documents of {sorted(STREAMS.values())} are needed")
    expected = {k: int(v) for k, v in pairs(args.expect, "--expect").items()}
    legacy = pairs(args.legacy_headers, "--legacy-headers")
    wanted = pairs(args.expect_attribute, "--expect-attribute")

    nc = await nats.connect(args.nats_url, allow_reconnect=False, connect_timeout=5)
    js = nc.jetstream()
    failures, totals, found = [], Stats(), {}
    for label, service in STREAMS.items():
        stream = f"{args.namespace}_{label}_events"
        messages = await read_stream(js, stream, f"{args.namespace}.{label}.events.>",
                                     expected.get(label, 1), args.wait)
        stats = Stats()
        for msg in messages:
            stats.messages += 1
            problems, event = check(msg, service, docs, legacy.get(label), stats)
            if problems:
                failures.append((stream, msg, problems))
            for name, value in wanted.items():
                if event is not None and event.get_attributes().get(name) == value:
                    found[name] = (event.get_type(), header(msg.headers, f"ce-{name}"))
        declared = docs[service].sent_types
        if not declared:
            failures.append((stream, None, [f"{service}'s document declares no send operation"]))
        if declared - stats.types:
            failures.append((stream, None, [f"never published though {service}'s document "
                                            f"sends them: {sorted(declared - stats.types)}"]))
        if expected.get(label) is not None and len(stats.event_ids) != expected[label]:
            failures.append((stream, None, [f"{len(stats.event_ids)} distinct events, but the "
                                            f"store has {expected[label]}"]))
        print(f"CONTRACT stream={stream} producer={service} messages={stats.messages} "
              f"events={len(stats.event_ids)} republished={stats.republished} "
              f"payloads_valid={stats.payloads_valid} headers_valid={stats.headers_valid} "
              f"consumer_views_valid={stats.consumer_views_valid} "
              f"types={len(stats.types & declared)}/{len(declared)} "
              f"legacy_headers={stats.with_legacy}/{stats.messages} "
              f"(expected {legacy.get(label, 'unchecked')})")
        totals.messages += stats.messages
        totals.payloads_valid += stats.payloads_valid
        totals.types |= stats.types
    await nc.close()

    for name, value in wanted.items():
        if name in found:
            ce_type, wire = found[name]
            print(f"CONTRACT attribute {name}={value!r} (on the wire {wire!r}) on {ce_type}")
        else:
            failures.append(("-", None, [f"no event carries {name}={value!r} once decoded"]))
    for stream, msg, problems in failures[:SHOWN_FAILURES]:
        print(f"CONTRACT-FAIL stream={stream}", file=sys.stderr)
        if msg is not None:
            print(f"  subject: {msg.subject} (stream sequence {msg.metadata.sequence.stream})",
                  file=sys.stderr)
            print(f"  headers: {json.dumps(dict(msg.headers or {}), sort_keys=True)}",
                  file=sys.stderr)
            print(f"  payload: {msg.data.decode('utf-8', 'replace')}", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    if len(failures) > SHOWN_FAILURES:
        print(f"CONTRACT-FAIL ... and {len(failures) - SHOWN_FAILURES} more", file=sys.stderr)
    print(f"CONTRACT-SUMMARY messages={totals.messages} payloads_valid={totals.payloads_valid} "
          f"types={len(totals.types)} documents={len(docs)} failures={len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
