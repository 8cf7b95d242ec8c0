#!/usr/bin/env python3
"""A/B two commits of `cargo bench --bench peers`, run in turn on one machine.

    python3 benches/ab.py REV_A REV_B [--only GROUPS] [--pairs N] [--python]

This VM's speed drifts by 10-30 % over an hour (docs/BENCHMARKS.md, "A
burst of submissions, again"): a figure measured before a change and one
measured after it an hour later say more about the hour than about the
change. This builds the bench binary of each revision once (a git worktree
and a target directory per revision, under target/ab/), then runs them
alternately, A B A B ..., `--pairs` times, each run writing the bench's
JSON (PEERS_JSON), and prints multiproc's median of every row for each
run side by side.

Python's peer is skipped unless `--python` (PEERS_PYTHON=/bin/false): its
rounds cool the caches between ours and take most of the time. With
`--python` every row's peer is printed too, run by run (for a row whose
peer is not Python, that peer's figures are printed all the same). `--only`
is passed as PEERS_ONLY (e.g. `futures,apply`). A revision may be
anything git names, `HEAD` or a branch included; the working tree's
uncommitted changes are not part of either side (commit them first, or
pass `WORKTREE` as a revision to use the working tree's own build).
target/ab/ may be deleted at any time (`git worktree prune` then forgets
its worktrees); a revision already built there is not built again.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def bench_binary(root, rev, ab_dir):
    """Builds the peers bench of `rev`; returns its executable's path."""
    if rev == "WORKTREE":
        src, target = root, os.path.join(root, "target")
    else:
        sha = sh(["git", "-C", root, "rev-parse", "--verify", rev + "^{commit}"]).strip()
        src = os.path.join(ab_dir, sha[:12], "src")
        target = os.path.join(ab_dir, sha[:12], "target")
        if not os.path.isdir(src):
            sh(["git", "-C", root, "worktree", "add", "--force", "--detach", src, sha])
    out = subprocess.run(
        ["cargo", "bench", "--bench", "peers", "--no-run", "--message-format=json"],
        cwd=src,
        env=dict(os.environ, CARGO_TARGET_DIR=target),
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    ).stdout
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "peers":
            if msg.get("executable"):
                return msg["executable"]
    sys.exit(f"no peers bench executable built for {rev}")


def run_once(binary, only, python):
    """One run of the bench binary; its rows as {(metric, peer): (ours, theirs)} in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    env = dict(os.environ, PEERS_JSON=path)
    env.pop("RUST_BACKTRACE", None)
    if only:
        env["PEERS_ONLY"] = only
    if not python:
        env["PEERS_PYTHON"] = "/bin/false"
    done = subprocess.run([binary, "--bench"], env=env, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"{binary} --bench exited with {done.returncode}")
    with open(path) as f:
        data = json.load(f)
    os.unlink(path)
    rows = {}
    for r in data["rows"]:
        ours = (r.get("ours") or {}).get("median_s")
        theirs = (r.get("theirs") or {}).get("median_s")
        rows[(r["metric"], r["peer"])] = (ours, theirs)
    return rows


def fmt(s):
    if s is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--only", default="", help="PEERS_ONLY groups, comma-separated")
    p.add_argument("--pairs", type=int, default=3, help="A B runs (default 3)")
    p.add_argument("--python", action="store_true", help="also run Python's peers")
    args = p.parse_args()

    root = sh(["git", "rev-parse", "--show-toplevel"]).strip()
    ab_dir = os.path.join(root, "target", "ab")
    os.makedirs(ab_dir, exist_ok=True)
    bins = {}
    for rev in (args.a, args.b):
        print(f"building {rev} ...", file=sys.stderr)
        bins[rev] = bench_binary(root, rev, ab_dir)

    runs = {args.a: [], args.b: []}
    for i in range(args.pairs):
        for rev in (args.a, args.b):
            print(f"pair {i + 1}/{args.pairs}: {rev}", file=sys.stderr)
            runs[rev].append(run_once(bins[rev], args.only, args.python))

    keys = []
    for rev in (args.a, args.b):
        for rows in runs[rev]:
            for k in rows:
                if k not in keys:
                    keys.append(k)
    print(f"multiproc's median per row, each run in turn (A = {args.a}, B = {args.b})")
    if args.python:
        # The peer ran beside each of our runs: its figures show whether
        # the machine moved between runs, and give each run's ratio.
        print("| metric | peer | A | B | peer beside A | peer beside B |")
        print("|---|---|---|---|---|---|")
    else:
        print("| metric | peer | A | B |")
        print("|---|---|---|---|")
    for metric, peer in keys:
        cols = []
        for side in (0, 1) if args.python else (0,):
            for rev in (args.a, args.b):
                cols.append(
                    ", ".join(fmt(rows.get((metric, peer), (None, None))[side]) for rows in runs[rev])
                )
        print(f"| {metric} | {peer} | " + " | ".join(cols) + " |")

if __name__ == "__main__":
    main()
