"""The services' AsyncAPI documents as a foreign subscriber reads them.

A message of a document is found by the `ce-dataschema` its headers schema fixes (`const`), the
URN every event carries; its payload and headers are validated against that message's schemas
with the whole document as the base of every `$ref`, so `#/components/schemas/...` resolves
as a reader of the document would resolve it. Shared by subscriber.py and fixtures.py.
"""

import json
import re

from jsonschema import Draft7Validator, Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

# AsyncAPI 3's default schema format is a superset of JSON Schema draft 7.
VALIDATORS = {
    None: Draft7Validator,
    "application/schema+json;version=draft-07": Draft7Validator,
    "application/schema+json;version=2020-12": Draft202012Validator,
}


def pointer(*parts):
    """A JSON pointer to `parts` (escaped as RFC 6901 says)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class Document:
    """One service's document: its messages by dataschema URN, its channels' addresses."""

    def __init__(self, service, path):
        self.service = service
        with open(path, encoding="utf-8") as f:
            self.doc = json.load(f)
        version = str(self.doc.get("asyncapi", ""))
        if not version.startswith("3."):
            raise ValueError(f"{path}: asyncapi {version!r}, not a 3.x document")
        self.uri = f"urn:contract:asyncapi:{service}"
        self.registry = Registry().with_resource(
            self.uri, Resource(contents=self.doc, specification=DRAFT7)
        )
        self.messages = {}  # dataschema URN -> Message
        for key in self.doc.get("components", {}).get("messages", {}):
            message = Message(self, key)
            if message.dataschema is None:
                continue  # the dead letters: not an event of ours
            if message.dataschema in self.messages:
                raise ValueError(f"{path}: two messages have ce-dataschema {message.dataschema}")
            self.messages[message.dataschema] = message
        self._addresses()

    def resolve(self, ptr):
        """The value at `ptr` and its own pointer, following local `$ref`s."""
        for _ in range(20):
            node = self.doc
            for part in ptr.split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
            ref = node.get("$ref") if isinstance(node, dict) else None
            if not ref:
                return node, ptr
            if not ref.startswith("#/"):
                raise ValueError(f"{self.service}: only local references are followed: {ref}")
            ptr = ref[1:]
        raise ValueError(f"{self.service}: a reference loop at {ptr}")

    def _addresses(self):
        """Each message's channel addresses, parameters as one NATS token; and the event
        types the service's `send` operations declare."""
        channels = self.doc.get("channels", {})
        by_message = {}
        for channel_key in channels:
            channel, channel_ptr = self.resolve(pointer("channels", channel_key))
            for message_key in channel.get("messages", {}):
                _, target = self.resolve(channel_ptr + pointer("messages", message_key))
                by_message.setdefault(target, []).append(channel.get("address"))
        for message in self.messages.values():
            message.addresses = [a for a in by_message.get(message.ptr, []) if a]
        self.sent_types = set()
        for op_key in self.doc.get("operations", {}):
            operation, op_ptr = self.resolve(pointer("operations", op_key))
            if operation.get("action") != "send":
                continue
            _, channel_ptr = self.resolve(op_ptr + pointer("channel"))
            refs = [op_ptr + pointer("messages", i)
                    for i in range(len(operation.get("messages", [])))]
            if not refs:  # no list: every message of the channel
                channel, _ = self.resolve(channel_ptr)
                refs = [channel_ptr + pointer("messages", k) for k in channel.get("messages", {})]
            for ref in refs:
                _, target = self.resolve(ref)
                for message in self.messages.values():
                    if message.ptr == target and message.ce_type:
                        self.sent_types.add(message.ce_type)

    def message(self, dataschema):
        return self.messages.get(dataschema)


class Message:
    """A message of a document: its schemas as validators, what its headers fix."""

    def __init__(self, document, key):
        self.document = document
        self.key = key
        self.node, self.ptr = document.resolve(pointer("components", "messages", key))
        headers = self._schema("headers")
        self.headers = self._validator(*headers) if headers else None
        payload = self._schema("payload")
        self.payload = self._validator(*payload) if payload else None
        props = document.resolve(headers[0])[0].get("properties", {}) if headers else {}
        self.dataschema = props.get("ce-dataschema", {}).get("const")
        self.ce_type = props.get("ce-type", {}).get("const")
        self.addresses = []

    def _schema(self, field):
        """The pointer to the message's `field` schema and its schema format."""
        if field not in self.node:
            return None
        node, ptr = self.document.resolve(self.ptr + pointer(field))
        if isinstance(node, dict) and "schemaFormat" in node and "schema" in node:
            return ptr + pointer("schema"), node["schemaFormat"]  # a multi-format schema object
        return ptr, None

    def _validator(self, ptr, schema_format):
        if schema_format and schema_format.startswith("application/vnd.aai.asyncapi"):
            schema_format = None  # the AsyncAPI schema format, of whatever document version
        cls = VALIDATORS.get(schema_format)
        if cls is None:
            raise ValueError(f"{self.key}: unsupported schemaFormat {schema_format}")
        cls.check_schema(self.document.resolve(ptr)[0])
        return cls({"$ref": self.document.uri + "#" + ptr},
                   registry=self.document.registry, format_checker=FormatChecker())

    def address_matches(self, subject):
        """Whether the NATS subject is one of the message's channel addresses."""
        for address in self.addresses:
            parts = re.split(r"(\{[^}]+\})", address)
            regex = "".join("[^.]+" if p.startswith("{") else re.escape(p) for p in parts)
            if re.fullmatch(regex, subject):
                return True
        return False


def errors(validator, instance):
    """Every validation error, one line each, with where in the instance it is."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])]


def load(pairs):
    """`SERVICE=PATH` arguments to documents by service."""
    documents = {}
    for pair in pairs:
        service, _, path = pair.partition("=")
        documents[service] = Document(service, path)
    return documents
