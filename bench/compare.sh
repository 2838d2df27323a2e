#!/usr/bin/env bash
# Speed of the Go engine side by side with the references, in one run, as ratios:
#   forward pass, batch 1 and 32, one thread: autoprune's engine against ONNX Runtime
#     (npm onnxruntime-node) on the same zoo models with the same weights (exported to ONNX);
#   training, Adam, batch 64, two threads: "autoprune train" against PyTorch (Debian
#     python3-torch with OpenBLAS) on the same architectures (bench/torch_train.py).
# Each measurement alternates the two sides ROUNDS times (default 3) and takes the median
# of each side; a ratio over 1.0 means autoprune is slower (forward) or faster (training).
#
#   bash bench/compare.sh                 # about 8 minutes on 2 cores
#   ROUNDS=5 MODELS="lenet5 vgg-small" bash bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export DEBIAN_FRONTEND=noninteractive
rounds="${ROUNDS:-3}"
models="${MODELS:-mlp lenet5 vgg-small resnet-small mobilenet-small}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The references, installed when missing.
ort_dir="${TMPDIR:-/tmp}/autoprune-ort"
if [ ! -d "$ort_dir/node_modules/onnxruntime-node" ]; then
  mkdir -p "$ort_dir"
  (cd "$ort_dir" && ONNXRUNTIME_NODE_INSTALL=skip npm install --silent --no-audit --no-fund onnxruntime-node@1.30.0)
fi
export NODE_PATH="$ort_dir/node_modules${NODE_PATH:+:$NODE_PATH}"
if ! /usr/bin/python3 -c "import torch" 2>/dev/null || [ ! -d /usr/lib/x86_64-linux-gnu/openblas-openmp ]; then
  apt-get update -qq && apt-get install -y -qq python3-torch libopenblas0-openmp >/dev/null
fi
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp

go build -o "$work/autoprune" ./cmd/autoprune
ap="$work/autoprune"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
bench_ms() { # MODEL BATCH [--command ...]: median forward latency in ms
  "$ap" bench "zoo:$1" --batch "$2" --threads 1 --runs 200 "${@:3}" 2>/dev/null |
    awk '/^latency/ {for (i=1;i<=NF;i++) if ($i=="median") {print $(i+1); exit}}'
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u +%F)"
echo "$(go version | cut -d' ' -f3), ONNX Runtime $(node -e "console.log(require('onnxruntime-node/package.json').version)"), PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)')"
echo
printf '%-10s %5s %14s %14s %8s\n' "forward" "batch" "autoprune ms" "ONNX RT ms" "ratio"
for m in $models; do
  for b in 1 32; do
    : >"$work/go" ; : >"$work/ort"
    for _ in $(seq "$rounds"); do
      bench_ms "$m" "$b" >>"$work/go"
      bench_ms "$m" "$b" --command "node runners/onnxruntime.js" >>"$work/ort"
    done
    g="$(median <"$work/go")"; o="$(median <"$work/ort")"
    printf '%-10s %5d %14.4f %14.4f %7.2fx\n' "$m" "$b" "$g" "$o" "$(awk -v a="$g" -v b="$o" 'BEGIN {print a / b}')"
  done
done
echo "(ratio: autoprune's time over ONNX Runtime's; at most 1.0 is the goal)"
echo
printf '%-10s %16s %16s %8s\n' "training" "autoprune img/s" "PyTorch img/s" "ratio"
for m in $models; do
  steps=300
  case "$m" in vgg-small|resnet-small) steps=40 ;; mobilenet-small) steps=100 ;; esac
  : >"$work/go" ; : >"$work/pt"
  for _ in $(seq "$rounds"); do
    "$ap" train --model "$m" --steps "$steps" --batch 64 --threads 2 --out "$work/m.safetensors" 2>/dev/null |
      sed -n 's/.*(\([0-9]*\) img\/s).*/\1/p' >>"$work/go"
    LD_LIBRARY_PATH="$openblas" /usr/bin/python3 bench/torch_train.py --model "$m" --steps "$steps" --batch 64 --threads 2 >>"$work/pt"
  done
  g="$(median <"$work/go")"; p="$(median <"$work/pt")"
  printf '%-10s %16.0f %16.0f %7.2fx\n' "$m" "$g" "$p" "$(awk -v a="$g" -v b="$p" 'BEGIN {print a / b}')"
done
echo "(ratio: autoprune's throughput over PyTorch's; at least 1.0 is the goal)"
