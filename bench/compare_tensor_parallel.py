#!/usr/bin/env python3
"""Tensor-parallel Cleave next to llama.cpp's RPC backend, on the same links and file.

    bench/compare_tensor_parallel.py CLEAVE LLAMA_BENCH RPC_SERVER MODEL
        [--workers 1,2,3] [--links loopback,1gbit/0.2ms,100mbit/1ms,30mbit/3ms]
        [--prompt 32] [--decode 32] [--repetitions 3] [--sync q8_0]

For every link and worker count: N `cleave llm worker` processes (one thread
each), each behind a `cleave netem` proxy with the link's rate and one-way
latency in both directions (none for loopback), and `cleave llm bench
--workers …` against the proxies; then N llama.cpp `rpc-server` processes (one
thread each) behind the same proxies and `llama-bench --rpc … -ngl 99`. The
coordinator / client uses one thread in both. Decoding tokens/s are compared
(prompt processing is printed too); Cleave's row also gives the bytes per token
it measured on its sockets and the plan's formula, and where the time went
(sync: sending and waiting for the workers; local: its own share). Output is a
Markdown table for docs/benchmarks.md.
"""
import argparse
import json
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def start_servers(commands, ports):
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for command in commands]
    for port in ports:
        wait_for(port)
    return processes


def start_proxies(cleave, link, upstream_ports):
    """Returns (processes, ports to connect to)."""
    if link == "loopback":
        return [], upstream_ports
    rate, latency = link.split("/")
    listen = [free_port() for _ in upstream_ports]
    arguments = [cleave, "netem", "--rate", rate, "--latency", latency, "--control", "none"]
    for index, (port, upstream) in enumerate(zip(listen, upstream_ports)):
        arguments += ["--proxy", f"link{index},127.0.0.1:{port},127.0.0.1:{upstream}"]
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in listen:
        wait_for(port)
    return [process], listen


def stop(processes):
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()


def cleave_row(args, link, count):
    ports = [free_port() for _ in range(count)]
    workers = start_servers([[args.cleave, "llm", "worker", "--listen", f"127.0.0.1:{p}", "--threads", "1", "--cache", args.cache]
                             for p in ports], ports)
    proxies, targets = start_proxies(args.cleave, link, ports)
    try:
        out = subprocess.run([args.cleave, "llm", "bench", "--model", args.model, "--threads", "1", "--prompt-tokens", str(args.prompt),
                              "--decode-tokens", str(args.decode), "--repetitions", str(args.repetitions), "--sync", args.sync,
                              "--workers", ",".join(f"127.0.0.1:{p}" for p in targets)],
                             check=True, capture_output=True, text=True, timeout=3600).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        stop(proxies + workers)


def llama_row(args, link, count):
    ports = [free_port() for _ in range(count)]
    servers = start_servers([[args.rpc_server, "-H", "127.0.0.1", "-p", str(p), "-t", "1"] for p in ports], ports)
    proxies, targets = start_proxies(args.cleave, link, ports)
    try:
        out = subprocess.run([args.llama_bench, "-m", args.model, "-t", "1", "-p", str(args.prompt), "-n", str(args.decode),
                              "-r", str(args.repetitions), "-ngl", "99", "-o", "json",
                              "--rpc", ",".join(f"127.0.0.1:{p}" for p in targets)],
                             check=True, capture_output=True, text=True, timeout=3600).stdout
        rows = json.loads(out)
        return {"prompt_tok_s": next(r for r in rows if r["n_prompt"] > 0)["avg_ts"],
                "decode_tok_s": next(r for r in rows if r["n_gen"] > 0)["avg_ts"]}
    except subprocess.CalledProcessError as error:
        return {"error": (error.stderr or "")[-200:]}
    finally:
        stop(proxies + servers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cleave")
    parser.add_argument("llama_bench")
    parser.add_argument("rpc_server")
    parser.add_argument("model")
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--links", default="loopback,1gbit/0.2ms,100mbit/1ms,30mbit/3ms")
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--sync", default="q8_0")
    parser.add_argument("--cache", default="/tmp/cleave-tp-bench-slices")
    args = parser.parse_args()

    single = json.loads(subprocess.run([args.cleave, "llm", "bench", "--model", args.model, "--threads", "1", "--prompt-tokens",
                                        str(args.prompt), "--decode-tokens", str(args.decode), "--repetitions", str(args.repetitions)],
                                       check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print(f"single node, 1 thread: Cleave decode {single['decode_tok_s']:.1f} tok/s, prompt {single['prompt_tok_s']:.1f} tok/s")
    print()
    print("| link | workers | Cleave tok/s | llama.cpp RPC tok/s | ratio | Cleave prompt tok/s | RPC prompt tok/s "
          "| bytes/token (plan) | sync ms/token | local ms/token |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for link in args.links.split(","):
        for count in [int(n) for n in args.workers.split(",")]:
            ours = cleave_row(args, link, count)
            theirs = llama_row(args, link, count)
            if "error" in theirs:
                reference, ratio, prompt = "failed", "–", "–"
            else:
                reference = f"{theirs['decode_tok_s']:.1f}"
                ratio = f"{ours['decode_tok_s'] / theirs['decode_tok_s']:.2f}"
                prompt = f"{theirs['prompt_tok_s']:.1f}"
            print(f"| {link} | {count} | {ours['decode_tok_s']:.1f} | {reference} | {ratio} | {ours['prompt_tok_s']:.1f} | {prompt} "
                  f"| {ours['bytes_per_token']} ({ours['plan_bytes_per_token']}) | {ours['sync_ms_per_token']} | {ours['local_ms_per_token']} |",
                  flush=True)


if __name__ == "__main__":
    main()
