#!/usr/bin/env bash
# The side-by-side benchmark: `make bench` runs this, `make bench FULL=1` the full
# version. It installs what the bench needs and then runs bench/run.py, which prints the
# table and writes bench/results/latest.md:
#   - wrk, h2load and openssl (Debian packages wrk, nghttp2-client, openssl) when missing;
#     openssl makes the self-signed certificate of the HTTPS rows;
#   - the bench venv bench/.venv with the pinned peers of bench/requirements.txt;
#   - the pure-Rust ceiling server, bench/ceiling (cargo, release), unless MODE needs none;
#   - gristmill itself from the repository root (pip, release build). If that build fails
#     the bench still runs, and the report says gristmill was skipped.
# Environment:
#   FULL=1          every suite and 3 rounds of 5 s;
#   MODE=access-log only the access-log test (access log on ÷ off, 1-worker suite);
#   MODE=rss        the RSS growth mode instead of the suites: RSS_REQUESTS requests per
#                   server (default 1000000), report in bench/results/rss.md;
#   PYTHON          the interpreter for a new venv (default python3);
#   BENCH_VENV      another venv to use instead of bench/.venv;
#   BENCH_INSTALL=0 install and build nothing: run with the venv (gristmill and peers in
#                   it as they are), wrk, h2load and the ceiling that are there;
#   BENCH_CEILING   the ceiling binary to run (default bench/ceiling/target/release/ceiling);
#   BENCH_ARGS      extra run.py arguments, e.g.
#     BENCH_ARGS="--servers gristmill-wsgi granian-wsgi ceiling --tests plain json"
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="${BENCH_VENV:-$BENCH/.venv}"
PYTHON="${PYTHON:-python3}"
MODE="${MODE:-}"

log() { printf '\n>>> %s\n' "$*"; }

case "$MODE" in
"" | access-log | rss) ;;
*)
    echo "bench.sh: unknown MODE=$MODE (use access-log or rss, or none)" >&2
    exit 2
    ;;
esac

# Everything the bench needs, installed or built where missing or stale.
install() {
    local missing=() sudo_cmd=() stamp want
    command -v wrk >/dev/null || missing+=(wrk)
    command -v h2load >/dev/null || missing+=(nghttp2-client)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v openssl >/dev/null || missing+=(openssl)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
        "${sudo_cmd[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
    fi

    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating the bench venv $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall the peers only when requirements.txt changed since the last install.
    stamp="$VENV/.requirements.sha256"
    want="$(sha256sum "$BENCH/requirements.txt" | cut -d' ' -f1)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        log "installing the peers (bench/requirements.txt)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -r "$BENCH/requirements.txt"
        echo "$want" >"$stamp"
    fi

    # The access-log test and the RSS mode run gristmill and Granian only.
    if [[ -z "$MODE" ]]; then
        log "building the ceiling (bench/ceiling, release)"
        cargo build --release --quiet --manifest-path "$BENCH/ceiling/Cargo.toml"
    fi

    log "installing gristmill from $ROOT (release build)"
    if ! "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$ROOT"; then
        # Never measure a stale build: without a fresh one, gristmill is skipped and
        # reported so.
        echo "WARNING: gristmill did not build or install; the bench runs without it" >&2
        "$VENV/bin/python" -m pip uninstall -q -y gristmill >/dev/null 2>&1 || true
    fi
}

if [[ "${BENCH_INSTALL:-1}" == 0 ]]; then
    log "BENCH_INSTALL=0: installing and building nothing, using $VENV as it is"
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "bench.sh: no venv at $VENV" >&2
        exit 2
    fi
else
    install
fi

args=()
mode="make bench"
if [[ "${FULL:-0}" == 1 ]]; then
    args+=(--full)
    mode="make bench FULL=1"
fi
case "$MODE" in
access-log)
    args+=(--tests access-log)
    mode="$mode MODE=access-log"
    ;;
rss)
    args+=(--rss-growth "${RSS_REQUESTS:-1000000}")
    mode="$mode MODE=rss${RSS_REQUESTS:+ RSS_REQUESTS=$RSS_REQUESTS}"
    ;;
esac
# shellcheck disable=SC2206  # BENCH_ARGS is split into words on purpose.
args+=(${BENCH_ARGS:-})
if [[ -n "${BENCH_ARGS:-}" ]]; then mode="$mode BENCH_ARGS=\"$BENCH_ARGS\""; fi
if [[ -n "${BENCH_VENV:-}" ]]; then mode="BENCH_VENV=$BENCH_VENV $mode"; fi
if [[ "${BENCH_INSTALL:-1}" == 0 ]]; then mode="BENCH_INSTALL=0 $mode"; fi
log "running bench/run.py ${args[*]}"
runpy="${VENV#"$ROOT"/}/bin/python bench/run.py${args[*]:+ ${args[*]}}"
BENCH_COMMAND="$mode (bash bench/bench.sh, which runs: $runpy)" \
    exec "$VENV/bin/python" "$BENCH/run.py" "${args[@]}"
