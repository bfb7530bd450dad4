#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a bounded time each and prints what libFuzzer
# reports: executions, corpus size, and any crash it saved under fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh                  # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh manifest prometheus
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain (`rustup toolchain
# install nightly`). Seeds each corpus from the repository's own fixtures and examples, so the
# fuzzer starts from real answers and real manifests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(manifest lmstudio ollama openai llamacpp prometheus api)
fi

seed() {
    local target="$1" dir="$here/corpus/$1"
    mkdir -p "$dir"
    case "$target" in
        manifest)
            find "$root/desired-state" "$root/examples" "$root/tests/fixtures/bad" \
                -name '*.yaml' -type f -exec cp -t "$dir" {} + 2>/dev/null || true ;;
        lmstudio) cp "$root"/tests/fixtures/observe/lmstudio_* "$dir"/ ;;
        ollama) cp "$root"/tests/fixtures/observe/ollama_* "$dir"/ ;;
        openai) cp "$root"/tests/fixtures/observe/vllm_* "$root"/tests/fixtures/observe/llamacpp_chat.json "$dir"/ ;;
        llamacpp) cp "$root"/tests/fixtures/observe/llamacpp_* "$dir"/ ;;
        prometheus) cp "$root"/tests/fixtures/observe/vllm_metrics.txt "$dir"/ ;;
        # Method, path (a digit picks a known endpoint), header lines, empty line, body.
        api)
            printf 'GET\n3?actions=5\n' >"$dir/status"
            printf 'GET\n4?since=0&limit=10\n' >"$dir/events"
            printf 'POST\n7\nauth\ncontent-type: application/json\n\n{"reason":"x"}' >"$dir/cordon"
            printf 'POST\n6\nbad-auth\n\n{"node":"n1"}' >"$dir/heartbeat"
            printf 'DELETE\n/api/v1/nodes/%%ff/cordon\n' >"$dir/delete" ;;
    esac
    # Files with the same name in different folders overwrite each other: fine for seeds.
}

status=0
for t in "${targets[@]}"; do
    seed "$t"
    log="$here/artifacts/$t.log"
    mkdir -p "$here/artifacts/$t"
    echo "== $t: ${seconds}s"
    if (cd "$here" && cargo +nightly fuzz run "$t" "corpus/$t" -- \
            -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) \
            >"$log" 2>&1; then
        :
    else
        status=1
        echo "   CRASH (see $log and fuzz/artifacts/$t/)"
    fi
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^Done [0-9]+ runs' "$log" | sed 's/^/   /' || true
    # libFuzzer's last status line: coverage (cov: edges, ft: features), corpus, exec/s.
    grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1 | sed 's/^/   last: /' || true
    echo "   corpus: $(find "$here/corpus/$t" -type f | wc -l) inputs"
done
exit "$status"
