#!/usr/bin/env python3
"""Python peer of benches/peers.rs: the same measurements, done with CPython's
``multiprocessing``, so the Rust bench can print them side by side.

Usage (Python 3.11+, standard library only):

    python3 benches/peers.py spawn_join --n 4 --method fork --iters 30
        Warms up, times ``--iters`` iterations and prints one JSON line:
        {"bench": "spawn_join", "n": 4, "method": "fork", "iters": 30,
         "median_s": ..., "min_s": ..., "samples_s": [...]}

    python3 benches/peers.py spawn_join --n 4 --method spawn --serve
        Warms up, prints {"ready": true}, then for every line read on stdin
        runs ONE iteration and prints {"s": <seconds>}. EOF ends it. This is
        how peers.rs interleaves Python iterations with its own (A B A B ...).

One iteration of ``spawn_join`` is what a user writes:

    procs = [ctx.Process(target=task) for _ in range(n)]
    for p in procs: p.start()
    for p in procs: p.join()

where ``task`` returns at once; it is timed with ``time.perf_counter``.
"""

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time


def task():
    """The trivial task (the Rust side returns a u64; a Process discards it)."""
    return 1


def spawn_join_once(ctx, n):
    """Start ``n`` processes, then join them all; returns elapsed seconds."""
    t0 = time.perf_counter()
    procs = [ctx.Process(target=task) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    for p in procs:
        if p.exitcode != 0:
            raise RuntimeError(f"child exited with {p.exitcode}")
    return elapsed


BENCHES = {"spawn_join": spawn_join_once}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", choices=sorted(BENCHES))
    ap.add_argument("--n", type=int, default=1, help="processes per iteration")
    ap.add_argument("--method", choices=["fork", "spawn", "forkserver"], default="fork")
    ap.add_argument("--iters", type=int, default=30, help="timed iterations (batch mode)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--serve", action="store_true",
                    help="one iteration per stdin line, one JSON line back")
    args = ap.parse_args(argv)

    ctx = mp.get_context(args.method)
    once = BENCHES[args.bench]
    # Warm-up: imports, the resource tracker (spawn), page cache, CPU clocks.
    for _ in range(args.warmup):
        once(ctx, args.n)

    if args.serve:
        emit({"ready": True, "python": sys.version.split()[0]})
        for _line in sys.stdin:
            emit({"s": once(ctx, args.n)})
        return 0

    samples = [once(ctx, args.n) for _ in range(args.iters)]
    emit({
        "bench": args.bench,
        "n": args.n,
        "method": args.method,
        "iters": args.iters,
        "python": sys.version.split()[0],
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "samples_s": samples,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
