#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent H100/H200 (about 8 minutes): run from the repository root with
# diffusers' wheel (and importlib_metadata) in .whl/ and results written under $OUT.
#   1. the block-sparse kernel's CUDA tests (FlexAttention's Triton path vs the float64 reference; fp32/bf16/fp16)
#   2. the block-sparse grid in fp16: block-sparse vs SDPA's flash backend, timed in the same call
#   3. SD 2.1 base at 512 and 1024 px, fp16, traced on CUDA, with the H100 roofline (the scaling issue's GPU check)
#   4. SD 1.5 at 1024 px, fp16: the block method on the kernel vs dense, end to end (`diffprobe approx`, untraced)
#   5. SD 2.1 base at 512 px, fp16, traced with --op-timer profiler: kernel time per record (CUPTI via
#      torch.profiler) joined to the op records; markers seen vs calls handled, device time outside any marker;
#      the Chrome trace with its GPU track
#   6. GPU timing (benchmarks/gpu_timing.py): SD 2.1 base at 512 and 1024 px and SD 1.5 at 512 px, fp16, 4 steps,
#      eager and compiled: markers vs calls, kernel time outside markers and on view rows, traced vs untraced kernel
#      time per stage, busy and idle per stage, compiled vs eager per layer type, roofline vs measured per stage
#   7. sparse attention on the GPU (`bash benchmarks/gpu_check.sh sparse`, at most 9 minutes 40 s: run it with a
#      600 s limit): the CUDA tests of the kernel and of the compiled predictor; end to end, UNet at tau 0.25 vs
#      dense (target >= 1.3x) for SD 1.5 at 1024 and 2048 px and SDXL at 2048 px, fp16; a call's cost breakdown at
#      4096 tokens (predictor -> block index, eager and compiled, against the dense call: target <= 10%); the token
#      count where block-sparse starts to win per head shape (2048-16384 tokens, 25% kept)
#   8. the calibrated model on the GPU (`bash benchmarks/gpu_check.sh predict`, about 8 minutes): calibrate on the
#      device in fp16 (`diffprobe hardware calibrate --quick --device cuda`), then predict the GPU runs of
#      benchmarks/predict.py measured there (per stage and run total, the roofline's error beside; the calibration
#      measures the block-sparse kernel's and block index's curves; its bench points and settings end to end are
#      left to step 7's budget: --no-kernels --no-settings)
# `bash benchmarks/gpu_check.sh timing` runs step 6 alone (about 7 minutes), `sparse` step 7 alone, `predict` step 8
# alone; no argument runs steps 1-5.
# Profile and approx results are packed into profiles.tgz. Every step has its own time limit, so one that hangs or
# fails leaves the others' results.
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, diffusers; print('torch', torch.__version__, 'triton', triton.__version__,
'diffusers', diffusers.__version__)" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"

if [ "${1:-}" = "timing" ]; then
  echo "== 6. GPU timing: traced vs untraced, busy/idle, compiled vs eager, roofline"
  for run in "sd21-base 512 150" "sd21-base 1024 170" "sd15 512 150"; do
    set -- $run
    timeout "$3" python3 benchmarks/gpu_timing.py --model "$1" --px "$2" --device cuda --dtype float16 --steps 4 \
      --hardware H100-SXM --json "$OUT/gpu_timing_$1_$2.json" 2>"$OUT/gpu_timing_$1_$2.err" \
      | tee "$OUT/gpu_timing_$1_$2.txt"
    echo "$1 $2: exit ${PIPESTATUS[0]} $(grep -v -i warn "$OUT/gpu_timing_$1_$2.err" | tail -c 300)"
  done
  exit 0
fi

if [ "${1:-}" = "predict" ]; then
  echo "== 8. the calibrated model on the GPU: calibrate (fp16) and predict measured GPU runs"
  timeout 560 python3 benchmarks/predict.py --quick --device cuda --dtype float16 --no-kernels --no-settings \
    --runs sd15-512,sd21-base-512,sdxl-512,tiny-pixart,tiny-flux >"$OUT/predict_gpu.json" 2>"$OUT/predict_gpu.err"
  echo "predict: exit $? $(grep -v -i warn "$OUT/predict_gpu.err" | tail -c 300)"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d.get('worst')), d.get('targets_met'))" \
    "$OUT/predict_gpu.json" 2>/dev/null
  exit 0
fi

if [ "${1:-}" = "sparse" ]; then
  # most important first, each step with its own limit (580 s of limits in all): a step that runs out leaves the
  # others' results
  echo "== 7a. CUDA tests: kernel and compiled predictor vs references"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/attention/test_kernels.py tests/attention/test_approx.py \
    -k "cuda" 2>&1 | tail -8 | tee "$OUT/pytest_sparse_cuda.txt"
  mkdir -p "$OUT/sparse"
  echo "== 7b. end to end: UNet at tau 0.25 vs dense, fp16, untraced (target >= 1.3x)"
  for run in "sd15 1024 100" "sdxl 2048 150" "sd15 2048 110"; do
    set -- $run
    timeout "$3" python3 -m diffprobe approx --model "$1" --height "$2" --width "$2" --steps 2 --method block \
      --tau 0.25 --device cuda --dtype float16 --out "/tmp/sparse_$1_$2" --force --format json -q \
      > "$OUT/sparse/$1_$2.json" 2> "$OUT/sparse/$1_$2.err"
    echo "$1 $2: exit $? $(grep -v -i warn "$OUT/sparse/$1_$2.err" | tail -c 300)"
    python3 - "$OUT/sparse/$1_$2.json" <<'PY' 2>&1 | tee -a "$OUT/sparse_e2e.txt"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
d = r[0]["denoiser_s"]
for x in r:
    print(sys.argv[1].rsplit("/", 1)[-1], x["method"], x.get("value"), "denoiser_s", round(x["denoiser_s"], 4),
          "speedup", round(d / x["denoiser_s"], 2), "kept", round(x["kept_fraction"], 3), "kernel", x["kernel"])
PY
  done
  echo "== 7c. a call's cost at 4096 tokens (fp16, SD 2.1's head shape): predictor share of the dense call"
  timeout 60 python3 benchmarks/block_sparse_overhead.py --device cuda --dtype float16 --heads 5 --head-dim 64 \
    --repeats 50 2>&1 | grep -v -i warn | tee "$OUT/sparse_overhead.txt"
  echo "== 7d. where block-sparse starts to win: 25% kept, 2048-16384 tokens, SD 1.5's and SD 2.1's heads"
  timeout 100 python3 benchmarks/block_sparse.py --device cuda --dtype float16 --tokens 2048,4096,8192,16384 \
    --density 0.25 --shapes 8x40,5x64 --block-size 64 --repeats 20 --check-heads 1 \
    --json "$OUT/sparse_crossover.json" 2>&1 | grep -v -i warn | tail -12 | tee "$OUT/sparse_crossover.txt"
  exit 0
fi

echo "== 1. CUDA tests"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/attention/test_kernels.py -k cuda 2>&1 | tail -15 \
  | tee "$OUT/pytest_cuda.txt"

echo "== 2. block-sparse grid (fp16)"
timeout 150 python3 benchmarks/block_sparse.py --device cuda --dtype float16 --tokens 4096,16384 \
  --density 1,0.5,0.25,0.1 --shapes 8x40,5x64 --block-size 128,64 --repeats 30 --check-heads 1 \
  --json "$OUT/block_sparse.json" 2>&1 | grep -v -i warn | tee "$OUT/block_sparse.txt"

mkdir -p "$OUT/profiles"
echo "== 3. SD 2.1 base, fp16, traced"
for px in 512 1024; do
  timeout 90 python3 -m diffprobe profile --model sd21-base --height $px --width $px --device cuda \
    --dtype float16 --steps 20 --sample-steps 4 --warmup 1 --hardware H100-SXM --out /tmp/sd21_$px --force \
    --format json > "$OUT/profiles/sd21_$px.json" 2> "$OUT/profiles/sd21_$px.err"
  echo "sd21 $px: exit $? $(tail -c 300 "$OUT/profiles/sd21_$px.err")"
done

echo "== 4. SD 1.5, 1024 px: the block method on the kernel vs dense, both untraced"
timeout 110 python3 -m diffprobe approx --model sd15 --height 1024 --width 1024 --steps 2 --method block \
  --tau 0.5,0.25 --device cuda --dtype float16 --out /tmp/sd15_1024 --force --format json \
  > "$OUT/profiles/sd15_1024_block.json" 2> "$OUT/profiles/sd15_1024_block.err"
echo "sd15 1024 block: exit $? $(tail -c 300 "$OUT/profiles/sd15_1024_block.err")"
echo "== 5. SD 2.1 base 512 px, fp16, traced, kernel times from the profiler (--op-timer profiler)"
timeout 90 python3 -m diffprobe profile --model sd21-base --height 512 --width 512 --device cuda --dtype float16 \
  --steps 20 --sample-steps 4 --warmup 1 --op-timer profiler --chrome-trace --out /tmp/sd21_512_kernels --force \
  --format json > "$OUT/profiles/sd21_512_kernels.json" 2> "$OUT/profiles/sd21_512_kernels.err"
echo "sd21 512 kernels: exit $? $(tail -c 300 "$OUT/profiles/sd21_512_kernels.err")"
cp /tmp/sd21_512_kernels/trace.json "$OUT/profiles/sd21_512_kernels_trace.json" 2>/dev/null
python3 - "$OUT/profiles/sd21_512_kernels.json" <<'PY' 2>&1 | tee "$OUT/op_timer.txt"
import json, sys
d = json.load(open(sys.argv[1]))
t = d.get("op_timer", {})
print("markers", t.get("markers"), "calls", t.get("calls"), "device s", t.get("device_s"),
      "outside markers s", t.get("outside_markers_s"), "busy s", t.get("busy_s"))
print("UNet stage s", d.get("stages", {}).get("unet"), "UNet by layer type s", d.get("seconds", {}).get("by_stage_layer_type", {}).get("unet"))
PY
python3 benchmarks/summarize_runs.py "$OUT"/profiles/*.json
tar czf "$OUT/profiles.tgz" -C "$OUT" profiles && rm -rf "$OUT/profiles"
