# Shared by the benchmarks (sourced; the functions use `work` and `log` when called):
# stopping a background process, waiting for a registry to answer, a plain distribution's
# config, the disk's own speed, and the set-up of a benchmark of one ecrld.

stop() { # name of the variable holding the pid
    local p=${!1}
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
    printf -v "$1" ''
}

wait_up() { # port, pid, log
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$1/v2/" && return
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    log "registry on port $1 did not start:"
    tail -20 "$3" >&2
    exit 1
}

write_dist_config() { # port: distribution, plain HTTP, no auth, deletes on, in $work/dist-data
    cat >"$work/dist.yml" <<YML
version: 0.1
log: { level: error }
storage:
  filesystem: { rootdirectory: $work/dist-data }
  delete: { enabled: true }
http: { addr: 127.0.0.1:$1 }
YML
}

disk_speed() { # sets $disk: the sequential O_DIRECT speeds, 1 GiB each way (as registry.sh)
    local w r
    w=$(dd if=/dev/zero of="$work/dd" bs=4M count=256 oflag=direct conv=fsync 2>&1 | tail -1)
    r=$(dd if="$work/dd" of=/dev/null bs=4M iflag=direct 2>&1 | tail -1)
    rm -f "$work/dd"
    disk="O_DIRECT write ${w##*, }, read ${r##*, }"
    log "disk: $disk"
}

one_ecrld_bench() { # name: the release binaries (built unless ECRL_BENCH_BUILD=0) in $bin,
    # regload in $loader, a fresh $work removed on exit with the ecrld in $ecrld_pid, a
    # free $port
    if [ "${ECRL_BENCH_BUILD:-1}" != 0 ]; then
        cargo build --release --locked --bins >&2
    fi
    bin=$PWD/target/release
    loader=/tmp/regload/release/regload
    if [ ! -x "$loader" ]; then
        cargo build --release --manifest-path ../shared/bench/regload/Cargo.toml \
            --target-dir /tmp/regload >&2
    fi
    work=$(mktemp -d "/tmp/ecrl-$1-bench.XXXXXX")
    ecrld_pid=''
    trap 'stop ecrld_pid; rm -rf "$work"' EXIT
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
}

manifest_load() { # port [conns] [duration]: regload GETs /v2/bench/app/manifests/1; prints
    # "rate p99_ms", and stops the benchmark unless every answer was 200
    local result
    result=$("$loader" load --url "http://127.0.0.1:$1" --concurrency "${2:-64}" \
        --duration "${3:-10}" --warmup 1 --threads 2 --path /v2/bench/app/manifests/1 \
        --header 'Accept: application/vnd.oci.image.manifest.v1+json')
    jq -e '(.status | keys) == ["200"] and .io_errors == 0' <<<"$result" >/dev/null ||
        { log "not every answer was 200: $result"; exit 1; }
    jq -r '"\(.rps) \(.latency.p99_us / 1000)"' <<<"$result"
}
