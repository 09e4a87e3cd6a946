#!/usr/bin/env bash
# The seven-method comparison on a CPU: one process per (method, seed, prompt), one torch thread each, $JOBS at a
# time, longest jobs first; then one table over all kept assets (`dreamstill eval --rescore`).
#
#   OUT=out/compare_cpu PROMPTS="2 5 9 14" SEEDS="0 1" JOBS=2 bash benchmarks/compare_methods_cpu.sh
#
# Per-step cost on one thread (benchmarks/step_time.py --prior builtin, 32 px): sds/csd/ssd/fsd ~0.31 s, asd 0.43,
# vsd 0.69, l2vsd 1.64; so with two jobs sharing two cores an l2vsd asset takes ~16 min and an sds one ~3.
# METHODS_ONE_SEED lists methods run for the first seed only (to fit a CPU budget). EVAL_ARGS goes to every eval
# (EVAL_ARGS=--no-surface measures the density stage alone, as the first round's table did).
set -u
OUT=${OUT:-out/compare_cpu}
PROMPTS=${PROMPTS:-"2 5 9 14"}
SEEDS=${SEEDS:-"0 1"}
METHODS=${METHODS:-"l2vsd vsd asd csd ssd fsd sds"}
METHODS_ONE_SEED=${METHODS_ONE_SEED:-""}
JOBS=${JOBS:-2}
export EVAL_ARGS=${EVAL_ARGS:-""}
mkdir -p "$OUT"
jobs_list() {  # seed-major, so that a cut-short run still has one complete seed for every method
  local first=1
  for s in $SEEDS; do
    for m in $METHODS; do
      if [ $first = 0 ] && [[ " $METHODS_ONE_SEED " == *" $m "* ]]; then continue; fi
      for p in $PROMPTS; do echo "$m $s $p"; done
    done
    first=0
  done
}
jobs_list | xargs -P "$JOBS" -L 1 sh -c '
  [ -f "$0/$1_s$2_p$3.json" ] && exit 0
  OMP_NUM_THREADS=1 python -m dreamstill.backend.cli eval --method "$1" --seeds 1 --seed-start "$2" \
      --prompt-index "$3" --device cpu $EVAL_ARGS --json "$0/$1_s$2_p$3.json" > "$0/$1_s$2_p$3.log" 2>&1 \
    || echo "failed: $1 seed $2 prompt $3 (see $0/$1_s$2_p$3.log)"' "$OUT"
python -m dreamstill.backend.cli eval --rescore "$OUT"/*.assets.pt --json "$OUT/all.json" --grid "$OUT/all.png"
