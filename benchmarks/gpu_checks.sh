#!/usr/bin/env bash
# The device checks in one run, for a session lent a GPU machine (its image has torch, peft and transformers; carry
# diffusers, pyzmq, trimesh, xatlas and fast-simplification as wheels in .whl/). GPU_CHECKS names the parts, in order
# (default: tests steps generate):
#   tests     the GPU tests (pytest -m gpu)
#   steps     every method's step time, SD 2.1-base's architecture with random weights, bf16, at 64/128/256 px
#             (arguments go to step_time.py after these defaults: `--batch-size 1 --methods sds vsd`)
#   generate  the README's default job, `dreamstill generate "a red cube"`, on the GPU: its wall time and the .glb
#   grid      ScaleDreamer's method x corpus table (benchmarks/generator_grid.sh; GRID_ARCHS, GRID_METHODS,
#             GRID_STEPS, GRID_JOBS, GRID_PRIOR_DTYPE (auto = bf16 here, or float32); stopped after GRID_LIMIT
#             seconds): every cell's folder (its generator.pt: a cell cut short resumes elsewhere with
#             `OUT=... bash benchmarks/generator_grid.sh`), scores, grids and
#             logs in $OUT/grid.tar.gz (a device run returns at most 8 files). Six triplane runs at once on the
#             H200: 2,500 steps in 330 s; the scoring (CPU-bound meshing) takes longer than the training there.
# Figures, logs and the .glb go to $OUT (default /tmp/gpu_checks).
set -o pipefail
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT" /tmp/pkg
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
ln -sfn "$PWD" /tmp/pkg/dreamstill  # the repository root is the dreamstill package (as pip install -e maps it)
export PYTHONPATH=/tmp/pkg${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers, peft, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
for part in ${GPU_CHECKS:-tests steps generate}; do
    case $part in
    tests) timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.txt" ;;
    steps) timeout "${STEP_TIME_LIMIT:-330}" python3 benchmarks/step_time.py --prior sd21-random --device cuda \
        --dtype bf16 --methods all --resolutions 64 128 256 "$@" 2>&1 | tee "$OUT/step_time.txt" ;;
    generate) (time timeout 300 python3 -c 'import sys; from dreamstill.backend.cli import main; sys.exit(main(sys.argv[1:]))' \
        generate "a red cube" -o "$OUT/red_cube.glb") 2>&1 | tee "$OUT/generate.txt" ;;
    grid) OUT="$OUT/grid" ARCHS=${GRID_ARCHS:-triplane} METHODS=${GRID_METHODS:-"asd sds"} STEPS=${GRID_STEPS:-2500} \
        PRIOR_DTYPE=${GRID_PRIOR_DTYPE:-auto} \
        JOBS=${GRID_JOBS:-6} OMP_NUM_THREADS=2 timeout "${GRID_LIMIT:-500}" bash benchmarks/generator_grid.sh > "$OUT/grid.txt" 2>&1
        pkill -f dreamstill.backend.cli; cat "$OUT/grid.txt"
        tar -czf "$OUT/grid.tar.gz" -C "$OUT" --exclude='*.assets.pt' grid ;;
    *) echo "GPU_CHECKS: unknown part '$part' (tests, steps, generate, grid)"; exit 2 ;;
    esac
done
