"""Reads scripts/ha-bench.sh's outputs (one directory) and prints each setup's figures and
their ratios to r1, the single-node system of today. Figures: the relay's and the consumer's
rates (median of the benches' runs) and, from loadgen's propagation phase, p50 and p99 of each
measurement (price change -> catalogue, order placed -> confirmed) at each rate."""

import re
import sys
from pathlib import Path

SETUPS = ["r1", "r1-sync", "r3-sync"]


def millis(text):
    m = re.match(r"([\d.]+)\s*(µs|us|ms|s)", text)
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2)
    return value * {"µs": 0.001, "us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def bench_rate(path, label):
    """The `rate/s` column of the median row (or the only run's row) named `label`."""
    rows = [l for l in path.read_text().splitlines() if label in l and re.match(r"^(med|\d+)\s", l)]
    med = [l for l in rows if l.startswith("med")] or rows[-1:]
    if not med:
        return None
    numbers = re.findall(r"[\d.]+", med[0].split(label, 1)[1])
    return float(numbers[2])  # events, seconds, rate/s


def propagation(path):
    figures, name = {}, None
    for line in path.read_text().splitlines():
        head = re.match(r"^\s+(.+?) at (\d+)/s \(", line)
        if head:
            name = f"{head.group(1)} at {head.group(2)}/s"
            continue
        seen = re.search(r"visible after ack: p50 ([\d.]+ ms)\s+p99 ([\d.]+ ms)", line)
        if seen and name:
            figures[f"{name} p50"] = millis(seen.group(1))
            figures[f"{name} p99"] = millis(seen.group(2))
            name = None
    return figures


def main(out):
    out = Path(out)
    table = {}
    for setup in SETUPS:
        f = {}
        f["relay rate/s"] = bench_rate(out / f"{setup}-relay.txt", "relay")
        f["raw publish rate/s"] = bench_rate(out / f"{setup}-relay.txt", "raw publish")
        f["consumer rate/s"] = bench_rate(out / f"{setup}-consumer.txt", "consumer (Consumer::run)")
        f["raw pull rate/s"] = bench_rate(out / f"{setup}-consumer.txt", "raw JetStream pull")
        for key, value in propagation(out / f"{setup}-loadgen.txt").items():
            f[f"{key} (ms)"] = value
        table[setup] = f
    keys = list(table["r1"].keys())
    print(f"\n{'figure':<52} " + " ".join(f"{s:>10}" for s in SETUPS) + "   r1-sync/r1  r3-sync/r1")
    for key in keys:
        values = [table[s].get(key) for s in SETUPS]
        cells = " ".join(f"{v:>10.1f}" if v is not None else f"{'-':>10}" for v in values)
        base = values[0]
        ratios = " ".join(
            f"{v / base:>11.2f}" if v is not None and base else f"{'-':>11}" for v in values[1:]
        )
        print(f"{key:<52} {cells}  {ratios}")


if __name__ == "__main__":
    main(sys.argv[1])
