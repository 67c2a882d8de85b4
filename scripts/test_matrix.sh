#!/usr/bin/env bash
# `make test-matrix`: run the tests on every supported CPython (3.10 to 3.13) against one
# abi3 wheel.
#
# The wheel is built once (maturin from .venv, debug profile) into .venv-matrix/wheels.
# For each 3.X the newest ~/.pyenv/versions/3.X.*/bin/python3 is used (an absent one is
# skipped with a line saying so): a venv .venv-matrix/3.X is created (or reused), the wheel
# is installed into it with the `test` and `frameworks` extras, and pytest runs from that
# venv, so the servers the tests start (`sys.executable -m gristmill`) run on that Python
# too. The package must come from the wheel, never from python/ in the source tree: the
# script checks `gristmill.__file__` before running the tests.
#
# The subset run on each Python (the full suite takes ~2.5 min on one; this keeps the four
# well under 10 min on 2 cores): the core files in CORE below (WSGI environ, input and
# response; ASGI http, websocket and lifespan; HTTP/1.1; processes; loader; settings) and
# every framework test (tests/test_fw_*.py), less the Autobahn WebSocket conformance runs
# (DESELECT: ~10 s per Python for frame handling done in Rust, the same on every Python;
# the deflate sections 12 and 13, tests/test_asgi_ws_autobahn_deflate.py, take minutes
# and are named `autobahn` too, should that file ever join the subset).
#
# Environment: PYTHONS="3.10 3.12" runs only those; PYTEST_ARGS adds pytest arguments.
# Exit status: non-zero if any interpreter's run failed (all are run first).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHONS=${PYTHONS:-"3.10 3.11 3.12 3.13"}
MATRIX=.venv-matrix
CORE=(
    tests/test_wsgi_environ.py
    tests/test_wsgi_input.py
    tests/test_wsgi_response.py
    tests/test_asgi_http.py
    tests/test_asgi_websocket.py
    tests/test_asgi_lifespan.py
    tests/test_http1.py
    tests/test_processes.py
    tests/test_loader.py
    tests/test_settings.py
    tests/test_recycle_cost.py
)
DESELECT="not autobahn"
mapfile -t FRAMEWORK_TESTS < <(ls tests/test_fw_*.py)

started=$(date +%s)
rm -rf "$MATRIX/wheels"
echo "== building the abi3 wheel once (debug)"
VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin build --quiet --out "$MATRIX/wheels" || exit 1
wheel=$(ls "$MATRIX"/wheels/gristmill-*-abi3-*.whl)
echo "== wheel: $wheel"

results=()
failed=0
for v in $PYTHONS; do
    py=$(ls -d "$HOME"/.pyenv/versions/"$v".*/bin/python3 2>/dev/null | sort -V | tail -n 1)
    if [[ -z "$py" ]]; then
        echo "== Python $v: skipped, no ~/.pyenv/versions/$v.*/bin/python3 on this machine"
        results+=("$v: skipped (not installed)")
        continue
    fi
    venv="$MATRIX/$v"
    echo "== Python $v: $py -> $venv"
    t0=$(date +%s)
    if [[ ! -x "$venv/bin/python" ]]; then
        "$py" -m venv "$venv" && "$venv/bin/python" -m pip install -q -U pip || {
            results+=("$v: FAILED to create the venv")
            failed=1
            continue
        }
    fi
    # The version does not change between builds: force the new wheel in, then its extras.
    if ! "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel" ||
        ! "$venv/bin/python" -m pip install -q "$wheel[test,frameworks]"; then
        results+=("$v: FAILED to install the wheel and its extras")
        failed=1
        continue
    fi
    # From the repository root, as pytest runs: gristmill must be the venv's copy.
    where=$(env -u PYTHONPATH "$venv/bin/python" -c \
        'import sys, gristmill, gristmill._core; print(gristmill.__file__); sys.exit(not gristmill._core.__file__.startswith(sys.prefix))')
    if [[ $? -ne 0 || "$where" != "$PWD/$venv/"* ]]; then
        echo "== Python $v: gristmill is imported from $where, not from $venv"
        results+=("$v: FAILED (gristmill not imported from the wheel)")
        failed=1
        continue
    fi
    # ${PYTEST_ARGS} is split on purpose (several arguments).
    # shellcheck disable=SC2086
    env -u PYTHONPATH "$venv/bin/pytest" -q -p no:cacheprovider --rootdir "$PWD" \
        -k "$DESELECT" ${PYTEST_ARGS:-} "${CORE[@]}" "${FRAMEWORK_TESTS[@]}" 2>&1 | tee "$MATRIX/$v.log"
    status=${PIPESTATUS[0]}
    summary=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$MATRIX/$v.log" | tail -n 1 | tr -d '=' | xargs)
    if ((status == 0)); then
        results+=("$v: ok ($summary; $(($(date +%s) - t0)) s)")
    else
        results+=("$v: FAILED ($summary; $(($(date +%s) - t0)) s; log in $MATRIX/$v.log)")
        failed=1
    fi
done

echo "== test matrix, $(($(date +%s) - started)) s in all:"
for r in "${results[@]}"; do
    echo "   Python $r"
done
exit "$failed"
