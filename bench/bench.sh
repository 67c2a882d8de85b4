#!/usr/bin/env bash
# The side-by-side benchmark (issue 5): `make bench` runs this, `make bench FULL=1` the full
# version. It installs what the bench needs and then runs bench/run.py, which prints the
# table and writes bench/results/latest.md:
#   - wrk and h2load (Debian packages wrk, nghttp2-client) when missing;
#   - the bench venv bench/.venv with the pinned peers of bench/requirements.txt;
#   - the pure-Rust ceiling server, bench/ceiling (cargo, release);
#   - gristmill itself from the repository root (pip, release build). If that build fails
#     the bench still runs, and the report says gristmill was skipped.
# Environment: FULL=1 for every suite and 3 rounds; PYTHON to pick the interpreter for the
# venv (default python3); BENCH_ARGS for extra run.py arguments, e.g.
#   BENCH_ARGS="--servers gristmill-wsgi granian-wsgi ceiling --tests plain json"
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="$BENCH/.venv"
PYTHON="${PYTHON:-python3}"

log() { printf '\n>>> %s\n' "$*"; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    log "installing ${missing[*]} with apt-get"
    sudo_cmd=()
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

log "building the ceiling (bench/ceiling, release)"
cargo build --release --quiet --manifest-path "$BENCH/ceiling/Cargo.toml"

log "installing gristmill from $ROOT (release build)"
if ! "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$ROOT"; then
    # Never measure a stale build: without a fresh one, gristmill is skipped and reported so.
    echo "WARNING: gristmill did not build or install; the bench runs without it" >&2
    "$VENV/bin/python" -m pip uninstall -q -y gristmill >/dev/null 2>&1 || true
fi

args=()
mode="make bench"
if [[ "${FULL:-0}" == 1 ]]; then
    args+=(--full)
    mode="make bench FULL=1"
fi
# shellcheck disable=SC2206  # BENCH_ARGS is split into words on purpose.
args+=(${BENCH_ARGS:-})
if [[ -n "${BENCH_ARGS:-}" ]]; then mode="$mode BENCH_ARGS=\"$BENCH_ARGS\""; fi
log "running bench/run.py ${args[*]}"
runpy="bench/.venv/bin/python bench/run.py${args[*]:+ ${args[*]}}"
BENCH_COMMAND="$mode (bash bench/bench.sh, which runs: $runpy)" \
    exec "$VENV/bin/python" "$BENCH/run.py" "${args[@]}"
