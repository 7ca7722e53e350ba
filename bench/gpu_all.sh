#!/usr/bin/env bash
# Every GPU measurement and test of the decode path in one go, for a machine lent for a short time.
# Usage (repo root, bitsandbytes importable):  bash bench/gpu_all.sh OUT_DIR [--quick]
# Each step has its own time limit, so a slow one cannot take the others down; logs and JSON go to OUT_DIR.
# --quick: the kernel's 13B shapes only, decode with zhiku's kernel only (no bitsandbytes run, no vision bench).
# STEPS="kernels profile bench tests" (the default: all of them) picks steps, for leases too short for all.
set -uo pipefail
out="${1:?usage: bash bench/gpu_all.sh OUT_DIR [--quick]}"
quick="${2:-}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
steps="${STEPS:-kernels profile bench bench-bitsandbytes tests identity vision}"
step() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  case " $steps " in *" ${name%%-zhiku} "*) ;; *) return 0 ;; esac
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "   exit $? after ${SECONDS}s"
  grep -v -i "warn\|it/s\]\|capture_end\|^{" "$out/$name.log" | tail -n 16
}
step kernels 170 python3 bench/gpu_kernels.py $quick --out "$out/gpu_kernels.json"
step profile 170 python3 bench/gpu_profile.py --out "$out/gpu_profile.json"
step bench-zhiku 250 python3 bench/gpu_bench.py --budgets 24 --nf4-kernel zhiku --tiling "$out/gpu_kernels.json" \
  --out "$out/gpu_bench-zhiku.json"
if [ "$quick" != "--quick" ]; then
  step bench-bitsandbytes 420 python3 bench/gpu_bench.py --budgets 24,12 --nf4-kernel bitsandbytes \
    --out "$out/gpu_bench-bitsandbytes.json"
fi
step tests 300 python3 -m pytest -q tests/gpu tests/models/test_triton_kernels.py tests/models/test_nf4_prmt.py
step identity 240 python3 bench/greedy_identity.py --out "$out/greedy_identity.json"  # needs the packaged SmolLM2
if [ "$quick" != "--quick" ]; then
  step vision 420 python3 bench/vision_bench.py --budgets 24,12 --rounds 4 --out "$out/vision_bench.json"
fi
