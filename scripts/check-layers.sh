#!/usr/bin/env bash
# Checks the module layering that docs/ARCHITECTURE.md's layer table states:
#  1. every `import` in Sources/TARGET/*.swift names a module that TARGET's row allows
#     (the platform's own modules — Foundation, Glibc, Synchronization, Dispatch… — always);
#  2. the lean board binary's dependency closure (from `swift package dump-package`) holds no
#     CleaveCoordinator, CleaveNetem, CleaveTestbed or the fleet CA (CleaveFleet, X509);
#  3. no file of CleaveAgent imports CleaveTrain.
# Exits non-zero, naming file, line and module, on the first kind of violation it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
package_json=$(mktemp)
trap 'rm -f "$package_json"' EXIT
swift package dump-package > "$package_json"
python3 - "$package_json" <<'PY'
import json, os, re, sys

platform = {"Foundation", "FoundationEssentials", "FoundationNetworking", "Glibc", "Darwin", "Musl",
            "Synchronization", "Dispatch", "_Concurrency", "Observation"}

# The layer table: rows `| `Target` | owns | `A`, `B` … |` under "## Layers".
text = open("docs/ARCHITECTURE.md", encoding="utf-8").read()
section = text.split("## Layers", 1)
if len(section) < 2:
    sys.exit("check-layers: docs/ARCHITECTURE.md has no '## Layers' section")
allowed = {}
for line in section[1].split("\n## ", 1)[0].splitlines():
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if len(cells) < 3 or not cells[0].startswith("`"):
        continue
    targets = re.findall(r"`([^`]+)`", cells[0])
    imports = set(re.findall(r"`([^`]+)`", cells[-1]))
    for target in targets:
        allowed[target] = imports

failures = []
for target in sorted(os.listdir("Sources")):
    folder = os.path.join("Sources", target)
    if not os.path.isdir(folder) or target.startswith("C") and not target.startswith("Cleave"):
        continue  # C shims: module maps only
    if target not in allowed:
        failures.append(f"Sources/{target}: no row in the layer table of docs/ARCHITECTURE.md")
        continue
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            if not name.endswith(".swift"):
                continue
            path = os.path.join(root, name)
            for number, line in enumerate(open(path, encoding="utf-8"), 1):
                match = re.match(r"\s*(?:@testable\s+|@_exported\s+|@preconcurrency\s+)*import\s+(?:(?:struct|class|enum|protocol|func|var|typealias)\s+)?([A-Za-z_][A-Za-z0-9_]*)", line)
                if not match:
                    continue
                module = match.group(1)
                if module in platform or module == target or module in allowed[target]:
                    continue
                failures.append(f"{path}:{number}: {target} imports {module}, which the layer table does not allow")
                if target == "CleaveAgent" and module == "CleaveTrain":
                    failures.append(f"{path}:{number}: the agent must take its data from CleaveDatasets, not the trainer")

# The lean agent's closure, from the package manifest itself.
package = json.load(open(sys.argv[1]))
dependencies = {}
for entry in package["targets"]:
    names = []
    for dependency in entry.get("dependencies", []):
        for kind in ("byName", "target", "product"):
            if kind in dependency:
                names.append(dependency[kind][0])
    dependencies[entry["name"]] = names
closure, stack = set(), ["cleave-agent"]
while stack:
    name = stack.pop()
    for dependency in dependencies.get(name, []):
        if dependency not in closure:
            closure.add(dependency)
            stack.append(dependency)
for forbidden in ("CleaveCoordinator", "CleaveNetem", "CleaveTestbed", "CleaveTrain", "CleaveFleet", "X509"):
    if forbidden in closure:
        failures.append(f"Package.swift: cleave-agent depends on {forbidden} (closure: {', '.join(sorted(closure))})")
for forbidden in ("CleaveLLM", "Yams"):
    if forbidden in closure:
        failures.append(f"Package.swift: cleave-agent depends on {forbidden}, which the board must not load at idle")
# On the board's path FoundationEssentials serves: all of Foundation (with ICU) is 8 MiB of
# resident code (bench/agent_footprint.sh).
for name in sorted(closure | {"cleave-agent"}):
    folder = f"Sources/{name}"
    if not os.path.isdir(folder):
        continue
    for root, _, files in os.walk(folder):
        for file in files:
            if not file.endswith(".swift"):
                continue
            path = os.path.join(root, file)
            fallback = False  # inside `#if canImport(FoundationEssentials) … #else … #endif`
            for number, line in enumerate(open(path), 1):
                if re.match(r"\s*#if\s+canImport\(FoundationEssentials\)", line):
                    fallback = True
                elif re.match(r"\s*#endif", line):
                    fallback = False
                elif not fallback and re.match(r"\s*(@preconcurrency\s+|@_exported\s+|public\s+|internal\s+)?import\s+(Foundation|FoundationInternationalization|FoundationNetworking)\s*$", line):
                    failures.append(f"{path}:{number}: {name} is on cleave-agent's path and imports all of Foundation; use FoundationEssentials")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"layers: {sum(1 for t in allowed)} targets in the table; every import allowed; cleave-agent links {', '.join(sorted(c for c in closure if c.startswith('Cleave')))}")
PY
