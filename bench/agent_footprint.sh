#!/usr/bin/env bash
# Footprint of the lean agent: binary size (as built and stripped) and resident memory once it
# has its assignment and serves the Fashion-MNIST head, idle. Needs a release build of both
# binaries: swift build -c release --product cleave --product cleave-agent
# (AGENT=path/to/cleave-agent measures another build, e.g. one linked with --static-swift-stdlib).
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
chmod 777 "$work"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/m.conf"
mosquitto -c "$work/m.conf" >/dev/null 2>&1 & broker=$!
sleep 0.5
.build/release/cleave coordinator --broker 127.0.0.1:$port >/dev/null 2>&1 & coordinator=$!
sleep 1
${AGENT:-.build/release/cleave-agent} --broker "127.0.0.1:$port" --profile devices/raspberry-pi-zero-2w.yaml --id footprint --samples 0 --model-cache "$work/cache" 2>"$work/agent.log" & agent=$!
for _ in $(seq 50); do grep -q "models verified" "$work/agent.log" 2>/dev/null && break; sleep 0.1; done
sleep 2
strip -o "$work/stripped" ${AGENT:-.build/release/cleave-agent}
# RSS counts every resident page of every shared library; PSS divides shared pages among the
# processes that map them (what the agent really costs on a board running other Swift/C programs).
private=$(awk '/^Private_Dirty:/ {print $2}' /proc/$agent/smaps_rollup)
printf '{"binary_bytes": %d, "stripped_bytes": %d, "idle_rss_kib": %d, "idle_pss_kib": %d, "swift_runtime_shared_libs": %d}\n' \
  "$(stat -c %s ${AGENT:-.build/release/cleave-agent})" "$(stat -c %s "$work/stripped")" \
  "$(awk '/VmRSS/ {print $2}' /proc/$agent/status)" "$(awk '/^Pss:/ {print $2}' /proc/$agent/smaps_rollup)" "$(ldd ${AGENT:-.build/release/cleave-agent} | grep -c /opt/swift || true)"
# Where the resident memory is: the largest mappings (heap and stacks are "[anon]").
awk '/^[0-9a-f]+-[0-9a-f]+ / {name = (NF >= 6 ? $6 : "[anon]")} /^Rss:/ {rss[name] += $2}
     END {for (n in rss) printf "%d %s\n", rss[n], n}' /proc/$agent/smaps | sort -rn | head -8 |
  awk 'BEGIN {printf "{\"largest_mappings_kib\": {"} {printf "%s\"%s\": %d", (NR > 1 ? ", " : ""), $2, $1} END {print "}}"}'
[ -n "${KEEP:-}" ] && cp /proc/$agent/smaps "$work/smaps"
kill $agent 2>/dev/null || true
wait $agent 2>/dev/null || true
# The same agent while it serves: 300 split requests of synthetic images at 50/s (the head runs
# patch by patch on this profile), its resident memory sampled every 0.2 s; the largest sample.
${AGENT:-.build/release/cleave-agent} --broker "127.0.0.1:$port" --profile devices/raspberry-pi-zero-2w.yaml --id footprint-serving \
  --samples 300 --rate 50 --mode split --source synthetic --model-cache "$work/cache" >"$work/serving.out" 2>"$work/serving.log" & agent=$!
peak=0
while kill -0 $agent 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' /proc/$agent/status 2>/dev/null || echo 0)
  [ "${rss:-0}" -gt "$peak" ] && peak=$rss
  sleep 0.2
done
served=$(awk '$1 == "split" {print $2}' "$work/serving.out")
printf '{"serving_rss_kib": %d, "requests_served": %s, "private_dirty_idle_kib": %d}\n' "$peak" "${served:-0}" "$private"
kill $coordinator $broker 2>/dev/null || true
sleep 0.5

[ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
