#!/usr/bin/env python3
"""CPU per call by layer, from a perf call-graph profile of grantd.

Each user-space sample goes to the innermost frame that names one of the layers below (a
sample in malloc called from the handler counts for the handler); kernel samples are
counted apart. Figures are microseconds of CPU per call: samples x sampling period / calls.

    perf record -F 1999 -e cpu-clock --call-graph dwarf,16384 -p <server pid> -o p.data -- sleep 4
    perf script -i p.data -F ip,sym > p.script        # while grantd-bench runs at a known rate
    python3 bench/profile_layers.py p.script --calls-per-s 1790 --seconds 4 --frequency 1999

The release build has no debug information, but perf unwinds it through .eh_frame, and
inlined functions count for the function they were inlined into.
"""
import argparse

# (substring of a frame's symbol, layer), first match wins, searched from the leaf outwards.
LAYERS = [
    ("Metrics::record", "metrics"),
    ("change_command", "validation"),
    ("Authenticator", "authentication"),
    ("SqlxValues", "sea-orm statement and values"),
    ("sea_query::value::Value", "sea-orm statement and values"),
    ("Statement::from_sql", "sea-orm statement and values"),
    ("QueryResult", "sea-orm row decoding"),
    ("Sequencer", "sequencing"),
    ("changes::sequence", "sequencing"),
    ("sqlx", "sqlx"),
    ("Writes::run", "service"),
    ("tracing", "tracing"),
    ("Admission", "admission"),
    ("grpc_timeout", "timeout"),
    ("Router", "router"),
    ("GrantApi", "handler and response"),
    ("prost", "prost"),
    ("tonic", "tonic"),
    ("h2::", "h2"),
    ("hyper", "hyper"),
    ("tokio", "tokio"),
]


def samples(path):
    """Each sample as its list of (address, symbol), leaf first."""
    frames = []
    with open(path, encoding="utf-8", errors="replace") as script:
        for line in script:
            if not line.strip():
                if frames:
                    yield frames
                frames = []
                continue
            address, _, symbol = line.strip().partition(" ")
            frames.append((address, symbol.strip()))
    if frames:
        yield frames


def layer_of(frames):
    for _, symbol in frames:
        for pattern, layer in LAYERS:
            if pattern in symbol:
                return layer
    return "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="output of perf script -F ip,sym")
    parser.add_argument("--calls-per-s", type=float, required=True, help="the load's rate while perf recorded")
    parser.add_argument("--seconds", type=float, required=True, help="how long perf recorded")
    parser.add_argument("--frequency", type=float, required=True, help="perf record -F")
    args = parser.parse_args()

    per_call = 1e6 / args.frequency / (args.calls_per_s * args.seconds)
    kernel, by_layer = 0, {}
    for frames in samples(args.script):
        if frames[0][0].startswith("ffff"):
            kernel += 1
        else:
            layer = layer_of(frames)
            by_layer[layer] = by_layer.get(layer, 0) + 1
    print(f"kernel {kernel * per_call:.1f} us per call, user {sum(by_layer.values()) * per_call:.1f}")
    for layer, count in sorted(by_layer.items(), key=lambda item: -item[1]):
        print(f"{count * per_call:7.2f}  {layer}")


if __name__ == "__main__":
    main()
