#!/usr/bin/env bash
# ScaleDreamer's table in the toy world: method (asd, sds, csd, vsd) x corpus (toy16, toy256, toy2000) x architecture
# (hyper-ingp, 3dconv, triplane), each generator trained for the same STEPS, then scored on its training prompts and
# on the held-out compositions. Cells scored already are skipped; a cell cut short resumes from its checkpoint.
# JOBS runs at a time (meant for a GPU; on a 2-core CPU use JOBS=2 and few STEPS). SEED seeds every run (a second
# seed goes into its own OUT). PRIOR_DTYPE (auto, float32, bfloat16) is the frozen prior's precision: auto is bf16 on
# a GPU, float32 on the CPU.
#
#   OUT=out/gen_grid STEPS=3000 JOBS=6 bash benchmarks/generator_grid.sh
#   python benchmarks/generator_table.py out/gen_grid        # the table again, from the JSON files
#   SEED=1 OUT=out/gen_grid_seed1 METHODS="asd sds" CORPORA=toy2000 STEPS=2500 JOBS=2 bash benchmarks/generator_grid.sh
set -u
OUT=${OUT:-out/gen_grid}
STEPS=${STEPS:-3000}
SEED=${SEED:-0}
PRIOR_DTYPE=${PRIOR_DTYPE:-auto}
JOBS=${JOBS:-6}
ARCHS=${ARCHS:-"hyper-ingp 3dconv triplane"}
METHODS=${METHODS:-"asd sds csd vsd"}
CORPORA=${CORPORA:-"toy16 toy256 toy2000"}
PY=${PY:-python3}
mkdir -p "$OUT"

one() {  # arch method corpus
  local dir="$OUT/$1_$2_$3"
  [ -f "$dir.heldout.json" ] && return  # scored already: delete its JSON files to run it again
  $PY -m dreamstill.backend.cli train-generator --arch "$1" --method "$2" --corpus "$3" --steps "$STEPS" \
      --seed "$SEED" --prior-dtype "$PRIOR_DTYPE" --grid-every 0 --resume -o "$dir" > "$dir.training.log" 2>&1 || return
  for split in train heldout; do
    $PY -m dreamstill.backend.cli eval --generator "$dir" --prompts $split --json "$dir.$split.json" \
        --grid "$dir.$split.png" > "$dir.$split.log" 2>&1
  done
}

for arch in $ARCHS; do for method in $METHODS; do for corpus in $CORPORA; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  one "$arch" "$method" "$corpus" &
done; done; done
wait
$PY benchmarks/generator_table.py "$OUT"
