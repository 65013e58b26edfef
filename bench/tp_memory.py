#!/usr/bin/env python3
"""Peak memory of a tensor-parallel worker, whole slice against a sliding window.

    bench/tp_memory.py CLEAVE MODEL [--fraction 0.25] [--decode 32]

Runs `cleave llm bench --workers A,B` twice over two `cleave llm worker`
processes: first with worker A holding its whole slice, then with worker A
started with `--memory-budget` set to FRACTION of its slice's weights. Prints
worker A's peak resident set (VmHWM), its resident set before any session
(the process's own overhead), the slice's weight and KV-cache bytes from the
plan, and the decoding tokens/s of both runs.
"""
import argparse
import json
import re
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port):
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) * 1024


def run(args, budget):
    ports = [free_port(), free_port()]
    workers = []
    for index, port in enumerate(ports):
        command = [args.cleave, "llm", "worker", "--listen", f"127.0.0.1:{port}", "--threads", "1", "--cache", f"/tmp/cleave-tp-memory-{index}"]
        if index == 0 and budget:
            command += ["--memory-budget", str(budget)]
        workers.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
    for port in ports:
        wait_for(port)
    idle = status(workers[0].pid, "VmRSS")
    out = subprocess.run([args.cleave, "llm", "bench", "--model", args.model, "--threads", "1", "--prompt-tokens", "32",
                          "--decode-tokens", str(args.decode), "--repetitions", "3", "--workers", ",".join(f"127.0.0.1:{p}" for p in ports)],
                         check=True, capture_output=True, text=True).stdout
    peak = status(workers[0].pid, "VmHWM")
    for worker in workers:
        worker.terminate()
        worker.wait()
    return idle, peak, json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cleave")
    parser.add_argument("model")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--decode", type=int, default=32)
    args = parser.parse_args()
    plan = subprocess.run([args.cleave, "llm", "shard-plan", "--model", args.model, "--nodes", "2", "--context", "65"],
                          check=True, capture_output=True, text=True).stdout
    weights_mib, cache_mib = [float(x) for x in re.search(r"^node0\s+\S+\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", plan, re.M).groups()]
    slice_bytes = int(weights_mib * 1048576)
    budget = int(slice_bytes * args.fraction)
    print(f"worker A's slice: {weights_mib:.1f} MiB of weights, KV cache {cache_mib:.2f} MiB (65 positions); budget {budget / 1048576:.1f} MiB")
    print()
    print("| worker A | idle RSS MiB | peak RSS MiB | peak − idle MiB | decode tok/s |")
    print("|---|---|---|---|---|")
    for label, value in [("whole slice", None), (f"--memory-budget {budget / 1048576:.1f}MiB ({args.fraction:.0%})", budget)]:
        idle, peak, bench = run(args, value)
        print(f"| {label} | {idle / 1048576:.1f} | {peak / 1048576:.1f} | {(peak - idle) / 1048576:.1f} | {bench['decode_tok_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
