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

The other benches start one child per run (not per iteration):

    python3 benches/peers.py pipe_pingpong --n 500 --serve
        One iteration: ``--n`` round trips of an 8-byte message over a
        ``Pipe()`` (``send_bytes`` / ``recv_bytes``) to a child that echoes it.

    python3 benches/peers.py pipe_values --n 500 --serve
        One iteration: ``--n`` round trips of a small int over a ``Pipe()``
        (``send`` / ``recv``, pickled) to a child that echoes it.

    python3 benches/peers.py pipe_big --n 67108864 --serve
        One iteration: one ``--n``-byte message over a ``Pipe()``
        (``send_bytes``) to a child that answers with its length.

    python3 benches/peers.py queue_throughput --n 2000 --serve
        One iteration: put ``--n`` on a command ``Queue()``; the child then puts
        ``--n`` small ints on a data ``Queue()`` and the parent gets them all.

    python3 benches/peers.py pool_map --n 1000000 --serve
        One iteration: ``pool.map(square, range(--n))`` on a ``Pool(2)``
        (``--workers``) created once, before the first iteration.

    python3 benches/peers.py pool_apply --n 500 --serve
        One iteration: ``--n`` calls of ``pool.apply(inc, (i,))`` on a
        ``Pool(1)`` (``--workers``) created once: the round trip of one small
        task to a worker that is already running.

    python3 benches/peers.py pool_apply_big --n 67108864 --serve
        One iteration: ``pool.apply(echo, (blob,))`` of one ``bytes`` of
        ``--n`` bytes on a ``Pool(1)`` created once: argument and result
        each that size.

    python3 benches/peers.py manager_dict --n 500 --serve
        One iteration: ``--n`` times ``d["k"] = i`` then ``d["k"]`` on a
        ``Manager().dict()`` (manager started once): 2 × ``--n`` round trips.

    python3 benches/peers.py manager_incr --n 250 --serve
        One iteration: 4 processes each do ``--n`` times
        ``with lock: d["c"] = d.get("c", 0) + 1`` on a ``Manager().dict()``
        and ``Manager().Lock()``; the total is checked.

The Rust bench divides each iteration's time by the operations in it (one-way
messages, items, calls), so ``--n`` may differ from the Rust side's count.
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


def _echo(conn):
    """Child of ``pipe_pingpong``: sends back every message until ``b"stop"``."""
    while True:
        msg = conn.recv_bytes()
        if msg == b"stop":
            return
        conn.send_bytes(msg)


def _echo_values(conn):
    """Child of ``pipe_values``: sends back every object until ``None``."""
    while True:
        obj = conn.recv()
        if obj is None:
            return
        conn.send(obj)


def _produce(q, cmd):
    """Child of ``queue_throughput``: for each count read from ``cmd``,
    puts that many small ints on ``q``; a count of 0 ends it."""
    while True:
        n = cmd.get()
        if n == 0:
            return
        for i in range(n):
            q.put(i)


def square(x):
    """The task of ``pool_map``."""
    return x * x


def inc(x):
    """The task of ``pool_apply``."""
    return x + 1


class PoolMap:
    """One iteration: ``pool.map(square, range(n))``, checked; the pool of
    ``workers`` processes starts once."""

    def __init__(self, ctx, n, workers):
        self.n = n
        self.pool = ctx.Pool(workers)

    def once(self):
        t0 = time.perf_counter()
        out = self.pool.map(square, range(self.n))
        elapsed = time.perf_counter() - t0
        if len(out) != self.n or (self.n and out[-1] != (self.n - 1) ** 2):
            raise RuntimeError("pool.map returned a wrong result")
        return elapsed

    def close(self):
        self.pool.close()
        self.pool.join()


class PoolApply:
    """One iteration: ``n`` calls of ``pool.apply(inc, (i,))``, each waiting
    for its result; the pool of ``workers`` processes starts once."""

    def __init__(self, ctx, n, workers):
        self.n = n
        self.pool = ctx.Pool(workers)

    def once(self):
        apply = self.pool.apply
        t0 = time.perf_counter()
        for i in range(self.n):
            if apply(inc, (i,)) != i + 1:
                raise RuntimeError(f"pool.apply({i}) returned a wrong result")
        return time.perf_counter() - t0

    def close(self):
        self.pool.close()
        self.pool.join()


def echo(b):
    """The task of ``pool_apply_big``."""
    return b


class PoolApplyBig:
    """One iteration: ``pool.apply(echo, (blob,))`` of one ``bytes`` of ``n``
    bytes, checked; the pool of ``workers`` processes starts once."""

    def __init__(self, ctx, n, workers):
        self.blob = bytes(i // 4096 % 256 for i in range(0, n, 4096)) * 4096
        self.blob = self.blob[:n]
        self.pool = ctx.Pool(workers)

    def once(self):
        t0 = time.perf_counter()
        out = self.pool.apply(echo, (self.blob,))
        elapsed = time.perf_counter() - t0
        if out != self.blob:
            raise RuntimeError("pool.apply returned other bytes")
        return elapsed

    def close(self):
        self.pool.close()
        self.pool.join()


class PipeValues:
    """One iteration: ``n`` round trips of a small int by ``send`` /
    ``recv`` over a ``Pipe()`` to a child that echoes it."""

    def __init__(self, ctx, n):
        self.n = n
        self.conn, child_end = ctx.Pipe()
        self.child = ctx.Process(target=_echo_values, args=(child_end,))
        self.child.start()

    def once(self):
        t0 = time.perf_counter()
        for i in range(self.n):
            self.conn.send(i)
            self.conn.recv()
        return time.perf_counter() - t0

    def close(self):
        self.conn.send(None)
        self.child.join()


class PipePingPong:
    """One iteration: ``n`` round trips of an 8-byte message over a
    ``Pipe()`` to a child that echoes it (the child starts once)."""

    def __init__(self, ctx, n):
        self.n = n
        self.conn, child_end = ctx.Pipe()
        self.child = ctx.Process(target=_echo, args=(child_end,))
        self.child.start()

    def once(self):
        msg = b"12345678"
        t0 = time.perf_counter()
        for _ in range(self.n):
            self.conn.send_bytes(msg)
            self.conn.recv_bytes()
        return time.perf_counter() - t0

    def close(self):
        self.conn.send_bytes(b"stop")
        self.child.join()


def _sink(conn):
    while True:
        b = conn.recv_bytes()
        if not b:
            break
        conn.send_bytes(len(b).to_bytes(8, "little"))


class PipeBig:
    """One iteration: one message of ``n`` bytes over a ``Pipe()`` to a
    child that acknowledges its length (the child starts once)."""

    def __init__(self, ctx, n):
        self.msg = bytes(i // 4096 % 256 for i in range(0, n, 4096)) * 4096
        self.msg = self.msg[:n]
        self.conn, child_end = ctx.Pipe()
        self.child = ctx.Process(target=_sink, args=(child_end,))
        self.child.start()

    def once(self):
        t0 = time.perf_counter()
        self.conn.send_bytes(self.msg)
        ack = self.conn.recv_bytes()
        elapsed = time.perf_counter() - t0
        if int.from_bytes(ack, "little") != len(self.msg):
            raise RuntimeError("the child acknowledged a wrong length")
        return elapsed

    def close(self):
        self.conn.send_bytes(b"")
        self.child.join()


class QueueThroughput:
    """One iteration: a child puts ``n`` small ints on a ``Queue()`` and the
    parent gets them all (the child starts once)."""

    def __init__(self, ctx, n):
        self.n = n
        self.q = ctx.Queue()
        self.cmd = ctx.Queue()
        self.child = ctx.Process(target=_produce, args=(self.q, self.cmd))
        self.child.start()

    def once(self):
        t0 = time.perf_counter()
        self.cmd.put(self.n)
        for _ in range(self.n):
            self.q.get()
        return time.perf_counter() - t0

    def close(self):
        self.cmd.put(0)
        self.child.join()


class ManagerDict:
    def __init__(self, ctx, n):
        self.n = n
        self.manager = ctx.Manager()
        self.d = self.manager.dict()

    def once(self):
        d = self.d
        t0 = time.perf_counter()
        for i in range(self.n):
            d["k"] = i
            d["k"]
        return time.perf_counter() - t0

    def close(self):
        self.manager.shutdown()


def _incr(d, lock, n):
    for _ in range(n):
        with lock:
            d["c"] = d.get("c", 0) + 1


class ManagerIncr:
    def __init__(self, ctx, n):
        self.ctx, self.n = ctx, n
        self.manager = ctx.Manager()
        self.d = self.manager.dict()
        self.lock = self.manager.Lock()

    def once(self):
        self.d["c"] = 0
        t0 = time.perf_counter()
        procs = [self.ctx.Process(target=_incr, args=(self.d, self.lock, self.n))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - t0
        if self.d["c"] != 4 * self.n:
            raise RuntimeError("lost increments")
        return elapsed

    def close(self):
        self.manager.shutdown()


class SpawnJoin:
    def __init__(self, ctx, n):
        self.ctx, self.n = ctx, n

    def once(self):
        return spawn_join_once(self.ctx, self.n)

    def close(self):
        pass


BENCHES = {
    "spawn_join": SpawnJoin,
    "pipe_pingpong": PipePingPong,
    "pipe_values": PipeValues,
    "pipe_big": PipeBig,
    "queue_throughput": QueueThroughput,
    "pool_map": PoolMap,
    "pool_apply": PoolApply,
    "pool_apply_big": PoolApplyBig,
    "manager_dict": ManagerDict,
    "manager_incr": ManagerIncr,
}
# Benches whose constructor also takes ``--workers``.
POOLED = {"pool_map", "pool_apply", "pool_apply_big"}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", choices=sorted(BENCHES))
    ap.add_argument("--n", type=int, default=1,
                    help="processes (spawn_join), round trips (pipe_pingpong, pipe_values) "
                         "items (queue_throughput, pool_map), calls (pool_apply) or bytes (pool_apply_big) "
                         "per iteration")
    ap.add_argument("--workers", type=int, default=None,
                    help="pool processes (pool_map: 2, pool_apply and pool_apply_big: 1)")
    ap.add_argument("--method", choices=["fork", "spawn", "forkserver"], default="fork")
    ap.add_argument("--iters", type=int, default=30, help="timed iterations (batch mode)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--serve", action="store_true",
                    help="one iteration per stdin line, one JSON line back")
    args = ap.parse_args(argv)

    ctx = mp.get_context(args.method)
    workers = args.workers or (2 if args.bench == "pool_map" else 1)
    if args.bench in POOLED:
        bench = BENCHES[args.bench](ctx, args.n, workers)
    else:
        bench = BENCHES[args.bench](ctx, args.n)
    try:
        # Warm-up: imports, the resource tracker (spawn), page cache, clocks.
        for _ in range(args.warmup):
            bench.once()

        if args.serve:
            emit({"ready": True, "python": sys.version.split()[0]})
            for _line in sys.stdin:
                emit({"s": bench.once()})
            return 0

        samples = [bench.once() for _ in range(args.iters)]
    finally:
        bench.close()
    emit({
        "bench": args.bench,
        "n": args.n,
        "method": args.method,
        **({"workers": workers} if args.bench in POOLED else {}),
        "iters": args.iters,
        "python": sys.version.split()[0],
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "samples_s": samples,
    })
    return 0


# ---- pool_churn (the fork server's rows, benches/peers/forkserver_rows.rs)

class PoolChurn:
    """One iteration: ``pool.map(inc, range(n), chunksize=1)`` on a pool of
    ``workers`` processes with ``maxtasksperchild=1``: a new worker for
    every task. The pool starts once."""

    def __init__(self, ctx, n, workers):
        self.n = n
        self.pool = ctx.Pool(workers, maxtasksperchild=1)

    def once(self):
        t0 = time.perf_counter()
        out = self.pool.map(inc, range(self.n), chunksize=1)
        elapsed = time.perf_counter() - t0
        if len(out) != self.n or (self.n and out[-1] != self.n):
            raise RuntimeError("pool.map returned a wrong result")
        return elapsed

    def close(self):
        self.pool.close()
        self.pool.join()


BENCHES["pool_churn"] = PoolChurn
POOLED.add("pool_churn")
# ---------------------------------------------------------------- futures
# The "futures" group (benches/peers/futures_rows.rs).

def _inc(x):
    """The task of ``executor_submit``."""
    return x + 1


class _OnExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes, started once."""

    def __init__(self, ctx, n, workers):
        from concurrent.futures import ProcessPoolExecutor
        self.n = n
        self.ex = ProcessPoolExecutor(workers, mp_context=ctx)

    def close(self):
        self.ex.shutdown(wait=True)


def _batch(start, n):
    """Starts ``n`` tasks with ``start(i)``, then takes each result in turn
    (``take(handle)``); returns the seconds taken, checked."""
    begin, take = start
    t0 = time.perf_counter()
    handles = [begin(i) for i in range(n)]
    out = [take(h) for h in handles]
    elapsed = time.perf_counter() - t0
    if out[-1] != n:
        raise RuntimeError("a pool returned a wrong result")
    return elapsed


class ExecutorSubmit(_OnExecutor):
    """One iteration: ``n`` calls of ``ex.submit(_inc, i)``, then each
    ``result()``, checked."""

    def once(self):
        submit = self.ex.submit
        return _batch((lambda i: submit(_inc, i), lambda f: f.result()), self.n)


BENCHES["executor_submit"] = ExecutorSubmit
POOLED.add("executor_submit")


class ExecutorRoundTrip(_OnExecutor):
    """One iteration: ``n`` times ``ex.submit(_inc, i).result()``, one at a
    time, checked."""

    def once(self):
        submit = self.ex.submit
        t0 = time.perf_counter()
        for i in range(self.n):
            if submit(_inc, i).result() != i + 1:
                raise RuntimeError("ProcessPoolExecutor returned a wrong result")
        return time.perf_counter() - t0


BENCHES["executor_round_trip"] = ExecutorRoundTrip
POOLED.add("executor_round_trip")


class PoolApplyAsync:
    """One iteration: ``n`` calls of ``pool.apply_async(_inc, (i,))``, then
    each ``get()``, checked; the ``Pool`` of ``workers`` processes starts
    once."""

    def __init__(self, ctx, n, workers):
        self.n = n
        self.pool = ctx.Pool(workers)

    def once(self):
        apply_async = self.pool.apply_async
        return _batch((lambda i: apply_async(_inc, (i,)), lambda r: r.get()), self.n)

    def close(self):
        self.pool.close()
        self.pool.join()


BENCHES["pool_apply_async"] = PoolApplyAsync
POOLED.add("pool_apply_async")


# ---------------------------------------------------------------- issue 15
# python3 benches/peers.py pool_map_struct --n 1000000 --workers 2 --serve
#     One iteration: ``pool.map(weigh, items)`` on a ``Pool(workers)``
#     created once, where ``items`` is a list of ``--n`` ``(str, float)``
#     tuples built once, before the first iteration (as the Rust side builds
#     its ``Vec`` of structs before its clock starts).


def weigh(item):
    """The task of ``pool_map_struct``: a ``(str, float)`` to a float."""
    name, value = item
    return value * len(name)


class PoolMapStruct:
    """One iteration: ``pool.map(weigh, items)`` of ``(str, float)`` tuples,
    checked; the pool and the items are made once."""

    def __init__(self, ctx, n, workers):
        self.n = n
        self.items = [(f"item-{i}", i * 0.5) for i in range(n)]
        self.pool = ctx.Pool(workers)

    def once(self):
        t0 = time.perf_counter()
        out = self.pool.map(weigh, self.items)
        elapsed = time.perf_counter() - t0
        if len(out) != self.n or (self.n and out[-1] != weigh(self.items[-1])):
            raise RuntimeError("pool.map returned a wrong result")
        return elapsed

    def close(self):
        self.pool.close()
        self.pool.join()


BENCHES["pool_map_struct"] = PoolMapStruct
POOLED.add("pool_map_struct")


if __name__ == "__main__":
    sys.exit(main())
