#!/usr/bin/env python3
"""Summarises `cleave fl simulate --csv` runs: final accuracy, the mean of the last five
measurements, when a target accuracy was first reached, and bytes sent up per aggregation.

Usage: python3 bench/fl_summary.py [--target PERCENT] LABEL=RUN.csv [LABEL=RUN.csv ...]
Prints a Markdown table.
"""
import csv
import sys


def main():
    arguments = sys.argv[1:]
    target = None
    if arguments and arguments[0] == "--target":
        target, arguments = float(arguments[1]), arguments[2:]
    print("| run | final accuracy | mean of last 5 | aggregations | emulated s | first ≥ target at s | MB up | bytes up per update |")
    print("|---|---|---|---|---|---|---|---|")
    for argument in arguments:
        label, path = argument.rsplit("=", 1)
        with open(path) as handle:
            rows = list(csv.DictReader(handle))
        measured = [(float(r["time_s"]), float(r["accuracy"]) * 100) for r in rows if r.get("accuracy")]
        last = rows[-1]
        updates = sum(int(r["updates"]) + int(r.get("refused") or 0) for r in rows)
        reached = next((t for t, a in measured if target is not None and a >= target), None)
        tail = [a for _, a in measured[-5:]]
        print(
            f"| {label} | {measured[-1][1]:.2f}% | {sum(tail) / len(tail):.2f}% | {len(rows)} | {float(last['time_s']):.1f} | "
            f"{'—' if reached is None else f'{reached:.1f}'} | {int(last['bytes_up']) / 1e6:.1f} | {int(last['bytes_up']) / max(updates, 1):,.0f} |")


if __name__ == "__main__":
    main()
