#!/usr/bin/env python3
"""Plots federated runs: accuracy against rounds (aggregations) and against emulated time, as one SVG.

Usage: python3 bench/plot_fl.py OUT.svg TITLE LABEL=RUN.csv [LABEL=RUN.csv ...]
RUN.csv is `cleave fl simulate --csv` (aggregation,time_s,accuracy,...) or bench/flower_fedavg.py's
(round,accuracy,seconds: no emulated time, so it appears in the left panel only). Rows without an
accuracy are skipped.
"""
import csv
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def read(path):
    points = []
    with open(path) as handle:
        for row in csv.DictReader(handle):
            if not row.get("accuracy"):
                continue
            step = int(row.get("aggregation") or row.get("round"))
            time = float(row["time_s"]) if "time_s" in row else None
            points.append((step, time, float(row["accuracy"]) * 100))
    return points


def panel(parts, series, x_of, x0, width, height, title, x_label, y_low, y_high):
    left, bottom, top = x0 + 50, 45, 40
    right = x0 + width - 10
    usable = [(label, [(x_of(p), p[2]) for p in points if x_of(p) is not None]) for label, points in series]
    usable = [(label, pts) for label, pts in usable if pts]
    max_x = max(x for _, pts in usable for x, _ in pts) * 1.02 or 1

    def sx(x):
        return left + x / max_x * (right - left)

    def sy(y):
        return height - bottom - (y - y_low) / (y_high - y_low) * (height - top - bottom)

    parts += [f'<text x="{(left + right) / 2}" y="28" text-anchor="middle" font-size="12">{title}</text>',
              f'<line x1="{left}" y1="{sy(y_low)}" x2="{right}" y2="{sy(y_low)}" stroke="black"/>',
              f'<line x1="{left}" y1="{sy(y_low)}" x2="{left}" y2="{top}" stroke="black"/>',
              f'<text x="{(left + right) / 2}" y="{height - 10}" text-anchor="middle">{x_label}</text>']
    for tick in range(6):
        x = max_x * tick / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{sy(y_low) + 15:.1f}" text-anchor="middle">{x:.0f}</text>')
        y = y_low + (y_high - y_low) * tick / 5
        parts.append(f'<text x="{left - 5}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.0f}</text>')
        parts.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{right}" y2="{sy(y):.1f}" stroke="#eee"/>')
    for label, pts in usable:
        color = COLORS[[l for l, _ in series].index(label) % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(max(y_low, y)):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"><title>{label}</title></polyline>')


def main():
    out, title = sys.argv[1], sys.argv[2]
    series = []
    for argument in sys.argv[3:]:
        label, path = argument.rsplit("=", 1)
        series.append((label, read(path)))
    accuracies = [y for _, points in series for _, _, y in points]
    y_high = min(100, max(accuracies) + 2)
    y_low = max(0, min(y_high - 30, sorted(accuracies)[len(accuracies) // 10] - 5))
    width, height = 900, 380
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20 * len(series) + 10}" '
             'font-family="sans-serif" font-size="11">',
             f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="13">{title}</text>']
    panel(parts, series, lambda p: p[0], 0, width // 2, height, "test accuracy (%) against rounds", "round (aggregation)", y_low, y_high)
    panel(parts, series, lambda p: p[1], width // 2, width // 2, height, "test accuracy (%) against emulated time",
          "emulated seconds", y_low, y_high)
    for index, (label, points) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        final = points[-1][2] if points else float("nan")
        parts.append(f'<text x="60" y="{height + 20 * index + 10}" fill="{color}">■ {label}: final {final:.2f}%</text>')
    parts.append("</svg>")
    with open(out, "w") as handle:
        handle.write("\n".join(parts) + "\n")
    print(out)


if __name__ == "__main__":
    main()
