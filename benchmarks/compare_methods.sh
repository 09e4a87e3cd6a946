#!/usr/bin/env bash
# All seven per-prompt methods on the toy benchmark, in parallel processes (meant for a GPU machine), plus a short
# amortized-generator training run evaluated on training and held-out prompts. Writes one JSON, log and render grid
# per process to $OUT and prints one table at the end (benchmarks/merge_tables.py).
#
#   OUT=out/compare STEPS=400 GEN_SECONDS=200 bash benchmarks/compare_methods.sh
set -u
OUT=${OUT:-out/compare}
STEPS=${STEPS:-400}
DEVICE=${DEVICE:-cuda}
GEN_SECONDS=${GEN_SECONDS:-200}
PY=${PY:-python3}
mkdir -p "$OUT"
EVEN="--prompt-index 0 --prompt-index 2 --prompt-index 4 --prompt-index 6 --prompt-index 8 --prompt-index 10 --prompt-index 12 --prompt-index 14"
ODD="--prompt-index 1 --prompt-index 3 --prompt-index 5 --prompt-index 7 --prompt-index 9 --prompt-index 11 --prompt-index 13 --prompt-index 15"
QUARTER="--prompt-index 0 --prompt-index 4 --prompt-index 8 --prompt-index 12"

run() {  # name, args...
  local name=$1; shift
  $PY -m dreamstill.backend.cli eval --seeds 1 --steps "$STEPS" --device "$DEVICE" \
      --json "$OUT/$name.json" --grid "$OUT/$name.png" "$@" > "$OUT/$name.log" 2>&1 &
}
run sds_a --method sds $EVEN;  run sds_b --method sds $ODD
run asd_a --method asd $EVEN;  run asd_b --method asd $ODD
run csd --method csd $EVEN
run ssd --method ssd $EVEN
run fsd --method fsd $EVEN
run vsd --method vsd $QUARTER
run l2vsd --method l2vsd $QUARTER
(
  timeout "$GEN_SECONDS" $PY -m dreamstill.backend.cli train-generator --arch hyper-ingp --method asd --corpus toy2000 \
      --steps 100000 --prompts-per-step 8 --checkpoint-every 100 --grid-every 0 -o "$OUT/gen" > "$OUT/gen_training.log" 2>&1
  for split in train heldout; do
    $PY -m dreamstill.backend.cli eval --generator "$OUT/gen" --prompts $split --device "$DEVICE" \
        --json "$OUT/gen_$split.json" --grid "$OUT/gen_$split.png" > "$OUT/gen_$split.log" 2>&1
  done
) &
wait
$PY benchmarks/merge_tables.py "$OUT"/*.json
