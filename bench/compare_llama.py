#!/usr/bin/env python3
"""Cleave's LLM engine next to llama.cpp on the same GGUF file and machine.

    bench/compare_llama.py CLEAVE LLAMA_BENCH MODEL [--threads 1,2] [--rounds 3]

Each round runs, for every thread count, `cleave llm bench` and llama.cpp's
`llama-bench` (prompt processing of 128 tokens, decoding of 64; 3 repetitions
inside each tool), one after the other, so that both see the same machine
state. Prints the median over rounds of each tool's figure, the ratio
cleave / llama.cpp, and Cleave's peak RSS against the file size. Output is a
Markdown table for docs/benchmarks.md.
"""
import argparse
import json
import os
import statistics
import subprocess


def cleave_bench(cleave, model, threads):
    out = subprocess.run([cleave, "llm", "bench", "--model", model, "--threads", str(threads), "--repetitions", "3"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def llama_bench(binary, model, threads):
    out = subprocess.run([binary, "-m", model, "-t", str(threads), "-p", "128", "-n", "64", "-r", "3", "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)
    prompt = next(r for r in rows if r["n_prompt"] > 0)["avg_ts"]
    decode = next(r for r in rows if r["n_gen"] > 0)["avg_ts"]
    return {"prompt_tok_s": prompt, "decode_tok_s": decode, "build": rows[0].get("build_commit", "?"),
            "flash_attn": rows[0].get("flash_attn")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cleave")
    parser.add_argument("llama_bench")
    parser.add_argument("model")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    results = {t: {"cleave": [], "llama": []} for t in threads}
    for round_index in range(args.rounds):
        for t in threads:
            results[t]["cleave"].append(cleave_bench(args.cleave, args.model, t))
            results[t]["llama"].append(llama_bench(args.llama_bench, args.model, t))
            c, l = results[t]["cleave"][-1], results[t]["llama"][-1]
            print(f"round {round_index + 1} threads {t}: cleave pp {c['prompt_tok_s']:.1f} tg {c['decode_tok_s']:.1f}; "
                  f"llama.cpp pp {l['prompt_tok_s']:.1f} tg {l['decode_tok_s']:.1f}", flush=True)

    size = os.path.getsize(args.model)
    llama_info = results[threads[0]]["llama"][0]
    print()
    print(f"model {os.path.basename(args.model)} ({size / 2**20:.1f} MiB); llama.cpp build {llama_info['build']}, "
          f"flash attention {llama_info['flash_attn']}; medians of {args.rounds} rounds")
    print()
    print("| threads | test | cleave tok/s | llama.cpp tok/s | ratio | cleave peak RSS |")
    print("|---:|---|---:|---:|---:|---:|")
    for t in threads:
        rss = max(r["peak_rss_bytes"] for r in results[t]["cleave"])
        for key, label in (("prompt_tok_s", "prompt 128 (pp128)"), ("decode_tok_s", "decode 64 (tg64)")):
            ours = statistics.median(r[key] for r in results[t]["cleave"])
            theirs = statistics.median(r[key] for r in results[t]["llama"])
            print(f"| {t} | {label} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}× | "
                  f"{rss / 2**20:.0f} MiB (file + {(rss - size) / 2**20:.0f} MiB) |")


if __name__ == "__main__":
    main()
