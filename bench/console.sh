#!/usr/bin/env bash
# The web console (issue 23): every page under 100 ms on a 1,000-image repository. One ecrld
# (release build, authentication on, the owner signed in with a session cookie), one
# repository of IMAGES images (each its own config and layer, 3 tags on every tenth);
# each page is fetched ROUNDS times one after the other and its median and worst times
# reported, beside the registry's own tag listing of the same repository for scale.
# Usage: bench/console.sh [ROUNDS]   (IMAGES; ECRL_BENCH_BUILD=0 measures target/release as
#   it is)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-30} images=${IMAGES:-1000}
log() { echo "[console] $*" >&2; }
# shellcheck source=bench/remote_lib.sh
source bench/remote_lib.sh
one_ecrld_bench console
export ECRL_DATA_DIR=$work/data ECRL_SOCKET=$work/ecrl.sock XDG_CONFIG_HOME=$work/config HOME=$work
env -u DBUS_SESSION_BUS_ADDRESS ECRL_LOG=warn "ECRL_REGISTRY_ADDR=127.0.0.1:$port" \
    "$bin/ecrld" --anonymous none >"$work/ecrld.log" 2>&1 &
ecrld_pid=$!
for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break
    sleep 0.05
done
token=$("$bin/ecrl" get-login-password)
log "pushing $images images into bench/app"
python3 - "$port" "$token" "$images" "$work/digest" <<'PY'
import base64, concurrent.futures, hashlib, json, sys, urllib.request
port, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
auth = "Basic " + base64.b64encode(f"AWS:{token}".encode()).decode()
base = f"http://127.0.0.1:{port}/v2/bench/app"
def req(url, data, method, kind="application/octet-stream"):
    r = urllib.request.Request(url, data=data, method=method,
                               headers={"authorization": auth, "content-type": kind})
    return urllib.request.urlopen(r).status
def push(i):
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": i}).encode()
    layer = (f"layer {i} " * 200).encode()
    digests = []
    for blob in (config, layer):
        d = "sha256:" + hashlib.sha256(blob).hexdigest()
        req(f"{base}/blobs/uploads/?digest={d}", blob, "POST")
        digests.append((d, len(blob)))
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digests[0][0], "size": digests[0][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digests[1][0], "size": digests[1][1]}]}).encode()
    tags = [f"v{i}"] + ([f"r{i}a", f"r{i}b"] if i % 10 == 0 else [])
    for t in tags:
        req(f"{base}/manifests/{t}", m, "PUT", "application/vnd.oci.image.manifest.v1+json")
    return "sha256:" + hashlib.sha256(m).hexdigest()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    digests = list(pool.map(push, range(n)))
open(sys.argv[4], "w").write(digests[0])
PY
digest=$(cat "$work/digest")
jar=$work/cookies
curl -s -c "$jar" -o /dev/null --data-urlencode "token=$token" "http://127.0.0.1:$port/ui/login"
# The repository page reads each image's config once (then remembers its platform): the
# first load is reported on its own.
first=$(curl -s -b "$jar" -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/ui/repositories/bench/app")
pages=(/ui/repositories /ui/repositories/bench/app "/ui/repositories/bench/app@$digest"
    /ui/registry /ui/tasks /ui/task-definitions)
results=()
for page in "${pages[@]}" /v2/bench/app/tags/list; do
    if [[ $page == /v2/* ]]; then
        auth=(-H "Authorization: Basic $(printf 'AWS:%s' "$token" | base64 -w0)")
    else
        auth=(-b "$jar")
    fi
    times=()
    size=0
    for _ in $(seq 1 "$rounds"); do
        line=$(curl -s "${auth[@]}" -o /dev/null -w '%{http_code} %{time_total} %{size_download}' \
            "http://127.0.0.1:$port$page")
        read -r code t size <<<"$line"
        [ "$code" = 200 ] || { log "$page answered $code"; exit 1; }
        times+=("$t")
    done
    results+=("$page|$size|${times[*]}")
done
python3 - "$(git rev-parse --short HEAD)" "$images" "$rounds" "$first" "${results[@]}" <<'PY'
import statistics, sys
commit, images, rounds, first = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
print(f"ecrl {commit}, release build, {images} images in one repository, {rounds} fetches a page\n")
print("| page | bytes | median ms | worst ms |")
print("|---|---|---|---|")
worst_page = 0
for entry in sys.argv[5:]:
    page, size, times = entry.split("|")
    ts = [float(t) * 1000 for t in times.split()]
    print(f"| `{page}` | {size} | {statistics.median(ts):.1f} | {max(ts):.1f} |")
    if page.startswith("/ui/"):
        worst_page = max(worst_page, statistics.median(ts))
print(f"\nfirst load of the repository page (configs read): {first * 1000:.1f} ms")
print(f"slowest page (median): {worst_page:.1f} ms (target < 100)")
PY
