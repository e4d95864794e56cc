#!/usr/bin/env bash
# CI's fuzzing step: builds every cargo-fuzz target once, runs each for FUZZ_SECONDS (default
# 60) from a temporary copy of its committed seeds in fuzz/corpus/ (so CI never grows the
# committed corpus), prints one summary line per target, and fails if any target crashes (the
# crashing input is kept in fuzz/artifacts/<target>/).
#
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_TARGETS (space-separated, default
# all), FUZZ_SANITIZER (cargo-fuzz's --sanitizer, default none: the code under test is safe
# Rust, and without AddressSanitizer the build is quicker and the runs about twice as fast).
set -euo pipefail

cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets="${FUZZ_TARGETS:-credential_codec host_policy ipc_decode}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# One build for all targets; `fuzz run` below finds it up to date.
cargo +nightly fuzz build --sanitizer "$sanitizer"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
for target in $targets; do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus"
  if [[ -d "fuzz/corpus/$target" ]]; then
    cp -R "fuzz/corpus/$target/." "$corpus/"
  fi
  log="$work/$target.log"
  echo "--- fuzz $target (${seconds}s)" >&2
  status=0
  cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  tail -n 40 "$log" >&2
  # libFuzzer's last words: "Done N runs in S second(s)"; the final stats also count a crash.
  runs="$(grep -Eo '^Done [0-9]+ runs' "$log" | tail -n 1 | grep -Eo '[0-9]+' || true)"
  [[ -n "$runs" ]] || runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" |
    tail -n 1 | grep -Eo '[0-9]+$' || echo '?')"
  cov="$(grep -Eo '#[0-9]+[[:space:]]+(DONE|INITED)[[:space:]]+cov: [0-9]+' "$log" | tail -n 1 |
    grep -Eo '[0-9]+$' || echo '?')"
  units="$(find "$corpus" -type f | wc -l | tr -d ' ')"
  if [[ $status -eq 0 ]]; then
    summary+=("$target: ok, $runs runs in ${seconds}s, coverage $cov, corpus $units")
  else
    artifact="$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -n 1 |
      sed 's/Test unit written to //' || true)"
    summary+=("$target: FAILED (exit $status) after $runs runs; input: ${artifact:-see log}")
    failed+=("$target")
  fi
done

printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzzing failed: ${failed[*]}" >&2
  exit 1
fi
