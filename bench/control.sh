#!/usr/bin/env bash
# Control-socket round trip and idle memory: `ecrl daemon status` timed with hyperfine
# (median), and ecrld's resident set after start-up with nothing to do.
# Usage: bench/control.sh  (builds release binaries; needs hyperfine: apt-get install hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins >&2
bin=$PWD/target/release
dir=$(mktemp -d)
export ECRL_DATA_DIR=$dir/data ECRL_SOCKET=$dir/ecrl.sock ECRL_REGISTRY_ADDR=127.0.0.1:0 HOME=$dir
trap '"$bin/ecrl" daemon stop -q >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$bin/ecrl" daemon start -q >/dev/null
pid=$("$bin/ecrl" daemon status --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
hyperfine --warmup 20 --runs 300 -N --export-json "$dir/h.json" "$bin/ecrl daemon status" >&2
sleep 1
python3 - "$dir/h.json" "$pid" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
rss = [l for l in open(f"/proc/{sys.argv[2]}/status") if l.startswith("VmRSS")][0].split()[1]
print(f"ecrl daemon status: median {r['median']*1000:.2f} ms, mean {r['mean']*1000:.2f} ms "
      f"(min {r['min']*1000:.2f}, max {r['max']*1000:.2f})")
print(f"ecrld idle RSS after 300 requests: {int(rss)/1024:.1f} MiB")
PY
