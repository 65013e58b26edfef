#!/usr/bin/env python3
"""Draws the grid / peak memory / extra multiply-adds curve of `cleave model plan --format csv` as an SVG.

Usage: cleave model plan MODEL --stage-end T --format csv | python3 bench/plot_patch_curve.py OUT.svg [TITLE]
One line per stage end: peak activation memory (MiB) against extra multiply-adds (%), a dot per grid.
"""
import csv
import sys


def main():
    out = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else "patch plans"
    rows = list(csv.DictReader(sys.stdin))
    if not rows:
        sys.exit("no plans on standard input")
    baseline = int(rows[0]["layer_by_layer_bytes"]) / 2**20
    points = {}
    for row in rows:
        points.setdefault(row["stage_end"], []).append(
            (float(row["extra_multiply_add_share"]) * 100, int(row["peak_bytes"]) / 2**20, row["grid"]))
    width, height, left, bottom, top, right = 640, 400, 60, 50, 40, 150
    max_x = max(x for series in points.values() for x, _, _ in series) * 1.05 or 1
    max_y = baseline * 1.05

    def sx(x):
        return left + x / max_x * (width - left - right)

    def sy(y):
        return height - bottom - y / max_y * (height - top - bottom)

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="13">{title}</text>',
             f'<line x1="{left}" y1="{sy(0)}" x2="{width - right}" y2="{sy(0)}" stroke="black"/>',
             f'<line x1="{left}" y1="{sy(0)}" x2="{left}" y2="{top}" stroke="black"/>',
             f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">extra multiply-adds (%)</text>',
             f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">peak activation memory (MiB)</text>',
             f'<line x1="{left}" y1="{sy(baseline)}" x2="{width - right}" y2="{sy(baseline)}" stroke="gray" stroke-dasharray="4"/>',
             f'<text x="{width - right + 4}" y="{sy(baseline) + 4}">layer by layer</text>']
    for tick in range(0, 6):
        x = max_x * tick / 5
        parts.append(f'<text x="{sx(x)}" y="{sy(0) + 15}" text-anchor="middle">{x:.0f}</text>')
        y = max_y * tick / 5
        parts.append(f'<text x="{left - 5}" y="{sy(y) + 4}" text-anchor="end">{y:.1f}</text>')
    for index, (end, series) in enumerate(points.items()):
        color = colors[index % len(colors)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in series)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}"/>')
        for x, y, grid in series:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"><title>{end} {grid}</title></circle>')
            parts.append(f'<text x="{sx(x) + 4:.1f}" y="{sy(y) - 4:.1f}" font-size="9">{grid}</text>')
        parts.append(f'<text x="{width - right + 4}" y="{top + 16 * index + 20}" fill="{color}">{end}</text>')
    parts.append("</svg>")
    with open(out, "w") as handle:
        handle.write("\n".join(parts) + "\n")
    print(out)


if __name__ == "__main__":
    main()
