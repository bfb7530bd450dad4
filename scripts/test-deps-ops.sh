#!/usr/bin/env bash
# Install the operator-experience test dependencies (idempotent; fast when present):
#
#   promtool              Debian's `prometheus` package: `promtool check metrics` on /metrics,
#                         `promtool check rules` / `test rules` on examples/prometheus/
#   chromium              Debian's `chromium` package: the status page's browser test
#   node/node_modules/playwright-core   pinned, from the npm registry, drives that Chromium
#   ops-env               shell-sourceable: HOMEOSTAT_PROMTOOL, HOMEOSTAT_CHROMIUM,
#                         HOMEOSTAT_PLAYWRIGHT_DIR (only for what is installed)
#
# Without a package registry (offline) whatever cannot be installed is skipped with a message
# and the script exits 0; the tests that need it then skip, unless HOMEOSTAT_REQUIRE_REAL=1.
# Environment: HOMEOSTAT_TEST_DEPS_DIR (default <repo>/.cache/test-deps).
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
deps=${HOMEOSTAT_TEST_DEPS_DIR:-$root/.cache/test-deps}
playwright_pkg=playwright-core@1.65.2

say() { printf 'test-deps-ops: %s\n' "$*" >&2; }
mkdir -p "$deps"
exec 8>"$deps/.ops-lock"
flock 8

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        say "SKIP: cannot install ${missing[*]} (needs root and apt-get)"
    else
        say "installing ${missing[*]} from Debian's packages"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$deps/ops-apt.log" 2>&1; then
            say "SKIP: apt-get install ${missing[*]} failed (offline?); see $deps/ops-apt.log"
        fi
    fi
fi

node_dir=$deps/node
if [[ ! -f $node_dir/node_modules/playwright-core/package.json ]] ||
    ! grep -q "\"version\": \"${playwright_pkg#*@}\"" "$node_dir/node_modules/playwright-core/package.json"; then
    if command -v npm >/dev/null 2>&1; then
        say "installing $playwright_pkg into $node_dir"
        mkdir -p "$node_dir"
        [[ -f $node_dir/package.json ]] || printf '{ "private": true }\n' >"$node_dir/package.json"
        npm install --prefix "$node_dir" --no-audit --no-fund --save-exact "$playwright_pkg" \
            >"$deps/ops-npm.log" 2>&1 || say "SKIP: npm install $playwright_pkg failed (offline?); see $deps/ops-npm.log"
    else
        say "SKIP: npm not found; the browser test will skip"
    fi
fi

{
    echo "# Written by scripts/test-deps-ops.sh"
    if command -v promtool >/dev/null 2>&1; then echo "export HOMEOSTAT_PROMTOOL='$(command -v promtool)'"; fi
    if command -v chromium >/dev/null 2>&1; then echo "export HOMEOSTAT_CHROMIUM='$(command -v chromium)'"; fi
    if [[ -f $node_dir/node_modules/playwright-core/package.json ]]; then
        echo "export HOMEOSTAT_PLAYWRIGHT_DIR='$node_dir/node_modules'"
    fi
} >"$deps/ops-env"
say "ready ($(grep -c export "$deps/ops-env") of 3 tools); env in $deps/ops-env"
