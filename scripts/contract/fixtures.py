"""The golden fixtures against the AsyncAPI documents: every `<Type>.v<N>.json` fixture's
`stored` payload (the payload as written at version N) must validate against the payload
schema of the producer's message for that type and version (dataschema
`urn:eventsourced:<producer>:<Type>:<N>`). Both services keep fixtures of the other's events
too; each is checked against its producer's document.

    python fixtures.py --document product-service=FILE --document order-service=FILE DIR...

Prints a line per directory and `FIXTURES-SUMMARY ...`; exits 1 on any failure.
"""

import argparse
import json
import pathlib
import re
import sys

import documents

# Which service writes a type, by the start of its name.
PRODUCERS = [
    ("Order", "order-service"),
    ("Product", "product-service"),
    ("Price", "product-service"),
    ("Stock", "product-service"),
    ("Reservation", "product-service"),
]
NAME = re.compile(r"(?P<type>[A-Za-z]+)\.v(?P<version>[0-9]+)\.json")


def producer(event_type):
    return next((s for prefix, s in PRODUCERS if event_type.startswith(prefix)), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--document", action="append", default=[], metavar="SERVICE=FILE")
    parser.add_argument("directories", nargs="+", type=pathlib.Path)
    args = parser.parse_args()
    docs = documents.load(args.document)
    checked = valid = 0
    failures = []
    for directory in args.directories:
        files = sorted(directory.glob("*.json"))
        if not files:
            failures.append(f"{directory}: no fixtures")
        ok = 0
        for path in files:
            checked += 1
            match = NAME.fullmatch(path.name)
            service = producer(match["type"]) if match else None
            if service is None or service not in docs:
                failures.append(f"{path}: not <Type>.v<N>.json of a known producer's type")
                continue
            dataschema = f"urn:eventsourced:{service}:{match['type']}:{match['version']}"
            message = docs[service].message(dataschema)
            if message is None or message.payload is None:
                failures.append(f"{path}: {service}'s document has no payload for {dataschema}")
                continue
            with open(path, encoding="utf-8") as f:
                fixture = json.load(f)
            if "stored" not in fixture:
                failures.append(f"{path}: no 'stored' payload")
                continue
            found = documents.errors(message.payload, fixture["stored"])
            failures += [f"{path}: against {service}'s {message.key}: {e}" for e in found]
            ok += not found
        valid += ok
        print(f"FIXTURES {directory}: {ok}/{len(files)} valid against their producer's document")
    for failure in failures:
        print(f"FIXTURES-FAIL {failure}", file=sys.stderr)
    print(f"FIXTURES-SUMMARY fixtures={checked} valid={valid} documents={len(docs)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
