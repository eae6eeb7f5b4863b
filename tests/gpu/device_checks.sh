#!/usr/bin/env bash
# Issue 16's GPU checks as one prepared script: run it where CUDA is (a workstation, or the
# project's lent device machine, which has torch, h5py, scikit-learn, pandas and matplotlib but no
# latentgen install: the script puts src/ on PYTHONPATH).
#
#   tests/gpu/device_checks.sh [STAGE ...]        (default: estimate mlp tests bench)
#
#   estimate  `latentgen estimate --device cuda --gpus 1` on config.yaml: the whole paper
#             (target <= 24 h on one H200) and the six TMLR pairs alone (target <= 8 h)
#   estimate_shared  the same with every model's runs sharing the GPU ESTIMATE_JOBS_PER_GPU ways
#             (default 4; $LATENTGEN_JOBS_PER_GPU, the workflow's override): the speed-ups measured
#   mlp       one MLP-MNIST run (c = 0, run 1, the paper's settings) and its probe job along the
#             grid, timed, beside the estimate's projection of those two jobs (target: within 1.5x)
#   tests     pytest -m gpu
#   bench     bench_training: python -m latentgen.bench train (the eager and the CUDA-graph step) and
#             train_shared (1, 2, 4 and 8 concurrent MLP / CNN runs, the CNN also with --cuda-graph) on
#             the device; then bench_probing:
#             probe_run, baselines_device and probe_model (each also a stage of its own)
#
# On the project's lent device machine, tests/gpu/lent_machine.sh prepares what must travel and
# runs these stages in one call.
#
# Every stage writes STAGE.log and STAGE.json to $OUT (default gpu-checks/) and a line to
# $OUT/summary.txt; a stage that fails or passes its time limit says so there and the next runs.
# MNIST: $LATENTGEN_TEST_DATA/MNIST/raw (default ../shared/data), or a prepared $MNIST_NPZ
# (`latentgen download --dataset mnist --out mnist.npz`; 11 MB, easier to carry).
# DEADLINE_S=N: the whole script ends within N seconds of its start (a lent machine's call has a hard
# limit): each stage's time limit is cut to what is left, and a stage with under 30 s left is skipped.
# MLP_EPOCHS=N: the mlp stage's run stops at epoch N (its projection is of the same N epochs) where
# the paper's run (58 epochs at c = 0, about 4 minutes on an H200) does not fit the time there is.
# DEVICE=cpu QUICK=1 runs the same commands at toy sizes on the CPU: how tests/gpu/test_device_checks.py
# checks this script on machines without a GPU. QUICK=1 alone: toy sizes on the GPU.
#
# Packages the machine lacks (the lent machine's image has no jsonschema, which the config check of
# `latentgen estimate` needs) are installed from the wheels in $WHEELS, a git-ignored folder carried
# along, made beside the repo with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       jsonschema jsonschema-specifications referencing rpds-py
# The script names any package still missing before it runs a stage.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
OUT="${OUT:-gpu-checks}"
DATA="${LATENTGEN_TEST_DATA:-$ROOT/../shared/data}"
WORK="$OUT/work"
mkdir -p "$OUT" "$WORK"
GPUS=1
[ "$DEVICE" = cpu ] && GPUS=0
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(estimate mlp tests bench)

say() { echo "$*" | tee -a "$OUT/summary.txt"; }
STARTED=$(date +%s)
DEADLINE_S="${DEADLINE_S:-}"

stage() {  # stage NAME LIMIT_S COMMAND...: run it with a time limit, its output to NAME.log
    local name=$1 limit=$2 start rc left
    shift 2
    start=$(date +%s)
    if [ -n "$DEADLINE_S" ]; then
        left=$(( STARTED + DEADLINE_S - start - 10 ))
        if [ "$left" -lt 30 ]; then say "$name: skipped ($left s left of DEADLINE_S=$DEADLINE_S)"; return 3; fi
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    say "$name: exit $rc after $(( $(date +%s) - start )) s$([ $rc -eq 124 ] && echo " (time limit $limit s)")"
    # a stage that failed: where it got to (an estimate's last timestamped progress lines)
    [ $rc -ne 0 ] && grep -E "^estimate \[" "$OUT/$name.log" | tail -n 3 | sed "s/^/$name: /" | tee -a "$OUT/summary.txt"
    return $rc
}

mnist_npz() {  # the prepared MNIST file the mlp stage trains on
    if [ -n "${MNIST_NPZ:-}" ]; then echo "$MNIST_NPZ"; return; fi
    [ -f "$WORK/mnist.npz" ] || "$PY" -m latentgen download --dataset mnist --data-root "$DATA" --no-download \
        --out "$WORK/mnist.npz" >&2 || return 1
    echo "$WORK/mnist.npz"
}

run_estimate() {  # run_estimate [NAME]: NAME (default estimate) names its files and summary lines
    local name=${1:-estimate}
    stage "$name" 480 "$PY" -m latentgen estimate --configfile config.yaml --device "$DEVICE" --gpus "$GPUS" \
        --json --out "$OUT/$name.csv" && tail -n 1 "$OUT/$name.log" > "$OUT/$name.json" && "$PY" - "$OUT" "$name" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
out, name = sys.argv[1:3]
import yaml
summary = json.load(open(f"{out}/{name}.json"))
if any(s["runs_per_gpu"] > 1 for s in summary.get("shared_training", {}).values()):
    print(f"{name}: training runs sharing the GPU, measured speed-ups " + ", ".join(
        f"{m} {s['runs_per_gpu']} runs {s['speedup']:.2f}x" for m, s in summary["shared_training"].items()))
print(f"{name}: whole paper {summary['projected_wall_seconds'] / 3600:.1f} h projected on "
      f"{summary['gpus']} GPU(s), {summary['device_hours']:.1f} device-hours (target <= 24 h)")
groups = yaml.safe_load(open("config.yaml"))["figures"]["groups"]
tmlr = {m for models in groups.values() for m in models}
hours = sum(r["device_hours"] for r in summary["rows"] if r["model"] in tmlr)
print(f"{name}: the TMLR figures' {len(tmlr)} pairs {hours:.1f} device-hours, their wall on one GPU at least "
      f"that (target <= 8 h)")
EOF
}

run_estimate_shared() {
    LATENTGEN_JOBS_PER_GPU="${ESTIMATE_JOBS_PER_GPU:-4}" run_estimate estimate_shared
}

run_mlp() {
    local npz epochs subset layers cfg
    npz=$(mnist_npz) || { say "mlp: no MNIST (set LATENTGEN_TEST_DATA or MNIST_NPZ)"; return 1; }
    epochs=(); subset=(); layers=()
    [ -n "${MLP_EPOCHS:-}" ] && epochs=(--max-epochs "$MLP_EPOCHS")
    [ "$QUICK" = 1 ] && epochs=(--max-epochs 2) && subset=(--train-subset 1000) && layers=(--layers fc1,fc4)
    cfg="$WORK/mlp_mnist.yaml"
    # the projection of exactly these two jobs: a config holding the one run
    "$PY" - "$cfg" "$QUICK" "$DATA" "${MLP_EPOCHS:-}" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open("config.yaml"))
cfg["data_root"] = sys.argv[3]  # timed on the real MNIST, as the run
model = cfg["models"]["mlp_mnist"]
if sys.argv[4]:
    model = {**model, "max_epochs": int(sys.argv[4])}
if sys.argv[2] == "1":
    model = {**model, "max_epochs": 2}
cfg.update(models={"mlp_mnist": model}, corruptions=[0.0], runs=[1], figures={"groups": {"main": ["mlp_mnist"]}, "build": []},
           repair={"models": []}, relabel={"models": []}, tables={"models": []}, outdir="gpu-checks/work/results")
yaml.safe_dump(cfg, open(sys.argv[1], "w"))
EOF
    stage mlp_estimate 300 "$PY" -m latentgen estimate --configfile "$cfg" --device "$DEVICE" --gpus "$GPUS" --json
    # the probe job the workflow runs for it (and the estimate prices): the plan's options, the 2025
    # families at the final checkpoint included
    # (a failure here stops the stage: the job's defaults would be another job than the one priced)
    local options_line
    options_line=$("$PY" - "$cfg" <<'EOF'
import sys
from latentgen.workflow.config import command_line, load_config
from latentgen.workflow.plan import JobPlan
cfg = load_config(sys.argv[1], "workflow/schemas/config.schema.yaml")
print(command_line("probe-run", JobPlan(cfg).probe_run_options("mlp_mnist", "0.0", "mnist")))
EOF
) || { say "mlp: the probe job's options could not be read from the plan"; return 1; }
    read -r -a probe_options <<< "$options_line"
    rm -rf "$WORK/run"
    stage mlp_train 420 "$PY" -m latentgen train --arch mlp --dataset mnist --corruption 0.0 --run 1 \
        --out "$WORK/run" --prepared "$npz" "${epochs[@]}" "${subset[@]}" --device "$DEVICE" --quiet
    stage mlp_probe 300 "$PY" -m latentgen probe-run --run-dir "$WORK/run" --prepared "$npz" --device "$DEVICE" \
        "${probe_options[@]}" "${layers[@]}" --out "$WORK/run.csv" --final-out "$WORK/run.final.csv"
    "$PY" - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, re, sys
out = sys.argv[1]
took = {}
for line in open(f"{out}/summary.txt"):
    m = re.match(r"(mlp_train|mlp_probe): exit 0 after (\d+) s", line)
    if m:
        took[m[1]] = float(m[2])
rows = json.loads(open(f"{out}/mlp_estimate.log").read().splitlines()[-1])["rows"]
projected = {f"mlp_{r['stage'].replace('probe_run', 'probe')}": r["seconds_per_job"] for r in rows
             if r["stage"] in ("train", "probe_run")}
result = {k: {"measured_s": took.get(k), "projected_s": projected.get(k),
              "ratio": took[k] / projected[k] if took.get(k) and projected.get(k) else None}
          for k in ("mlp_train", "mlp_probe")}
json.dump(result, open(f"{out}/mlp.json", "w"), indent=1)
for k, v in result.items():
    ratio = "n/a" if v["ratio"] is None else f"{v['ratio']:.2f}x"
    print(f"{k}: measured {v['measured_s']} s, projected {v['projected_s'] and round(v['projected_s'], 1)} s, "
          f"measured/projected {ratio} (target within 1.5x; whole seconds, process start included)")
EOF
}

run_tests() {
    if [ "$DEVICE" = cpu ]; then say "tests: skipped on the CPU (pytest -m gpu needs CUDA)"; return 0; fi
    LATENTGEN_TEST_DATA="$DATA" stage tests 420 "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider -rs
    tail -n 1 "$OUT/tests.log" | tee -a "$OUT/summary.txt"
}

run_bench() {
    local rc=0
    run_bench_training || rc=1
    run_bench_probing || rc=1
    return $rc
}

run_bench_training() {  # fails when a stage fails (skipped ones included); each JSON is its log's last line
    local rc=0 shared
    shared=$([ "$QUICK" = 1 ] && echo "--runs 1 2 --samples 320" || echo "--runs 1 2 4 8 --samples 32000")
    stage bench_train 240 "$PY" -m latentgen.bench train --json --device "$DEVICE" --data-root "$DATA" \
        --samples $([ "$QUICK" = 1 ] && echo 320 || echo 32000) || rc=1
    for arch in mlp cnn; do  # how many runs of a small model share the GPU well (the plan's runs per GPU)
        stage "bench_train_shared_$arch" 240 "$PY" -m latentgen.bench train_shared --json --device "$DEVICE" \
            --arch "$arch" $shared || rc=1
    done
    # the CNN's Adam model with the graph (forward and backward replayed, the step eager): how much
    # faster, alone and sharing the GPU (it is not the CNN's default until tests/gpu checks it there)
    if [ "$DEVICE" != cpu ]; then
        stage bench_train_shared_cnn_graph 240 "$PY" -m latentgen.bench train_shared --json --device "$DEVICE" \
            --arch cnn --cuda-graph $shared || rc=1
    fi
    for name in train train_shared_mlp train_shared_cnn train_shared_cnn_graph; do
        if [ -f "$OUT/bench_$name.log" ]; then tail -n 1 "$OUT/bench_$name.log" > "$OUT/bench_$name.json"; fi
    done
    return $rc
}

run_bench_probing() {
    local small=() rc=0
    [ "$QUICK" = 1 ] && small=(--n-train 1000 --n-test 200)
    stage bench_probe_run 240 "$PY" -m latentgen.bench probe_run --json --device "$DEVICE" --data-root "$DATA" \
        $([ "$QUICK" = 1 ] && echo "--train-subset 500 --epochs 2") || rc=1
    stage bench_baselines_device 240 "$PY" -m latentgen.bench baselines_device --json --device "$DEVICE" \
        --data-root "$DATA" "${small[@]}" $([ "$QUICK" = 1 ] && echo "--epochs 1 --no-qda") || rc=1
    stage bench_probe_model 240 "$PY" -m latentgen.bench probe_model --json --device "$DEVICE" \
        $([ "$QUICK" = 1 ] && echo "--n-train 200 --n-test 50" || echo "--n-train 50000 --n-test 10000") || rc=1
    for name in probe_run baselines_device probe_model; do
        if [ -f "$OUT/bench_$name.log" ]; then tail -n 1 "$OUT/bench_$name.log" > "$OUT/bench_$name.json"; fi
    done
    return $rc
}

for s in "${STAGES[@]}"; do
    case "$s" in
        estimate|estimate_shared|mlp|tests|bench|bench_training|bench_probing) ;;
        *) echo "unknown stage $s (estimate, estimate_shared, mlp, tests, bench, bench_training, bench_probing)" >&2
           exit 2 ;;
    esac
done
if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:$(cd "$WORK/site" && pwd)"
fi
missing=$("$PY" -c "import importlib.util as u; print(' '.join(m for m in ('torch', 'numpy', 'scipy', 'sklearn', \
'threadpoolctl', 'h5py', 'pandas', 'matplotlib', 'yaml', 'jsonschema', 'PIL') if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
    echo "missing Python packages: $missing (carry their wheels and set WHEELS; see the header)" >&2
    exit 2
fi
say "device checks at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), device $DEVICE"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee -a "$OUT/summary.txt"
failed=0
for s in "${STAGES[@]}"; do
    "run_$s" || failed=1
done
exit $failed
