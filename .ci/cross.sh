#!/usr/bin/env bash
# Cross-compiles autoprune for 64-bit ARM (Linux boards such as a Raspberry Pi, and Android
# phones) with CGO_ENABLED=0, then, when qemu can run arm64 binaries here, checks the arm64
# latency agent end to end: it starts "autoprune agent" for linux/arm64 under qemu on a
# loopback port, measures zoo:lenet5 on it with the host's "autoprune bench --agent", checks
# that the device it reports is arm64, times lenet5 against itself interleaved on it
# ("bench --agent --versus", POST /v1/measure-pair), and stops it with SIGINT (exit code 130).
#
# Before the agent, the kernel tests and the engine's convolution and zoo tests run as arm64
# code under qemu. Every build, wait and run is bounded by a timeout. Exits non-zero on any failure; only a
# missing qemu that cannot be installed is a warning (the arm64 run is then skipped).
# Set CROSS_OUT=DIR to keep the binaries in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export DEBIAN_FRONTEND=noninteractive

out="${CROSS_OUT:-}"
keep=1
if [ -z "$out" ]; then
  out="$(mktemp -d)"
  keep=0
fi
mkdir -p "$out"
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$agent_pid" 2>/dev/null || true
  fi
  if [ "$keep" = 0 ]; then rm -rf "$out"; fi
}
trap cleanup EXIT

fail() { echo "cross: FAIL: $*" >&2; exit 1; }

# elf_machine FILE prints the ELF e_machine field (183 is AArch64, 62 is x86-64).
elf_machine() { od -An -tu2 -j18 -N2 "$1" | tr -d ' '; }

build() { # GOOS GOARCH OUTPUT [PACKAGE]
  echo "cross: building $1/$2 -> $(basename "$3")"
  CGO_ENABLED=0 GOOS="$1" GOARCH="$2" timeout 900 go build -trimpath -ldflags="-s -w" -o "$3" "${4:-./cmd/autoprune}" ||
    fail "go build for $1/$2 failed"
  local machine
  machine="$(elf_machine "$3")"
  [ "$machine" = 183 ] || fail "$3 is not an AArch64 ELF binary (e_machine $machine)"
  echo "cross:   ok, $(wc -c <"$3") bytes, AArch64 ELF"
}

go version
build linux arm64 "$out/autoprune-linux-arm64"
build android arm64 "$out/autoprune-android-arm64"
# The agent alone, for phones: it links only what measuring needs.
build android arm64 "$out/autoprune-agent-android-arm64" ./cmd/autoprune-agent
echo "cross: building the host binary"
timeout 900 go build -o "$out/autoprune" ./cmd/autoprune || fail "host build failed"

qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
if [ -z "$qemu" ]; then
  echo "cross: qemu-aarch64-static not found; installing qemu-user-static"
  if ! { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq qemu-user-static; } >"$out/apt.log" 2>&1; then
    tail -n 5 "$out/apt.log" >&2 || true
    echo "cross: WARNING: could not install qemu-user-static; skipping the arm64 agent run" >&2
    exit 0
  fi
  qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
  if [ -z "$qemu" ]; then
    echo "cross: WARNING: qemu-user-static installed no qemu-aarch64; skipping the arm64 agent run" >&2
    exit 0
  fi
fi
# The portable kernels (the path every arm64 device runs) against their references, and the
# engine's convolutions and zoo models against the float64 reference, as arm64 code.
echo "cross: testing the kernels and the engine as linux/arm64 code under $qemu"
GOARCH=arm64 timeout 900 go test -count=1 -exec "$qemu" ./internal/kernel || fail "arm64 kernel tests failed"
GOARCH=arm64 timeout 900 go test -count=1 -exec "$qemu" -run 'TestExecConv|TestExecZoo|TestExecPool|TestExecAdd' ./nn || fail "arm64 engine tests failed"

echo "cross: running the linux/arm64 agent under $qemu"

log="$out/agent.log"
# The agent picks a free loopback port and prints it; it stops by itself after 5 minutes.
timeout --signal=INT --kill-after=10 300 "$qemu" "$out/autoprune-linux-arm64" agent --listen 127.0.0.1:0 >"$log" 2>&1 &
agent_pid=$!
url=""
for _ in $(seq 1 600); do # up to 60 s
  url="$(grep -so 'http://127\.0\.0\.1:[0-9]*' "$log" | head -n 1 || true)"
  [ -n "$url" ] && break
  kill -0 "$agent_pid" 2>/dev/null || { cat "$log" >&2; fail "the arm64 agent exited before listening"; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log" >&2; fail "the arm64 agent did not start listening within 60 s"; }
echo "cross: agent at $url"

bench="$out/bench.txt"
if ! timeout 300 "$out/autoprune" bench zoo:lenet5 --agent "$url" --runs 5 >"$bench" 2>&1; then
  cat "$bench" >&2
  cat "$log" >&2
  fail "autoprune bench --agent $url failed"
fi
cat "$bench"
grep -q '^device    linux/arm64, ' "$bench" || fail "the agent did not report a linux/arm64 device"
grep -q '^latency   median ' "$bench" || fail "no latency distribution in the bench output"

pair="$out/pair.txt"
if ! timeout 300 "$out/autoprune" bench zoo:lenet5 --agent "$url" --versus zoo:lenet5 --runs 20 >"$pair" 2>&1; then
  cat "$pair" >&2
  cat "$log" >&2
  fail "autoprune bench --agent $url --versus zoo:lenet5 failed"
fi
cat "$pair"
grep -q '^device    linux/arm64, ' "$pair" || fail "the interleaved pairs were not timed on the linux/arm64 device"
grep -q '^ratio     [0-9.]*x the reference' "$pair" || fail "no ratio in the bench --versus output"
grep -q '^spread    ' "$pair" || fail "no spread in the bench --versus output"

# Ctrl-C stops the agent gracefully with exit code 130.
kill -INT "$agent_pid"
code=0
for _ in $(seq 1 200); do # up to 20 s
  kill -0 "$agent_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$agent_pid" 2>/dev/null; then
  fail "the arm64 agent did not stop within 20 s of SIGINT"
fi
wait "$agent_pid" || code=$?
agent_pid=""
echo "cross: agent log:"
sed 's/^/  /' "$log"
[ "$code" = 130 ] || fail "the arm64 agent exited with $code after SIGINT, want 130"
echo "cross: OK (linux/arm64 and android/arm64 built; arm64 kernel and engine tests passed and the arm64 agent measured lenet5, alone and interleaved, under qemu)"
