#!/usr/bin/env bash
# Retrain the shipped motion backbone from scratch: every step of the model card's "Retrain from
# scratch" (engine/assets/BACKBONE_MODEL_CARD.md), in order, into one output pair.
#
#   bash scripts/retrain_backbone.sh [--data data/motion] [--out engine/assets/backbone.onnx] [--work out/retrain]
#   bash scripts/retrain_backbone.sh --smoke      # tiny data and models, minutes: checks that the sequence runs
#
# Needs the train extra (.venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e '.[train]') and
# the data engine's shards (python -m emote.engine.training.build_data --out data/motion, about 12 min).
# About 3 h on 2 idle cores: two motion models (17 min each), four closure nets (14-19 min each),
# calibration (2.5 min), the distillation of the jaw ensemble into one model (27 min). Intermediate
# files go to --work; the result (a split pair: OUT and OUT's .cond.onnx) replaces --out only at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA=data/motion OUT="" WORK="" SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "retrain_backbone.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
PY=.venv/bin/python
"$PY" -c "import torch, onnx, diffusers" 2>/dev/null || {
  echo "retrain_backbone.sh: needs the train extra: .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e '.[train]'" >&2
  exit 1; }
T="$PY -m emote.engine.training"
if [ "$SMOKE" = 1 ]; then
  WORK="${WORK:-$(mktemp -d /tmp/emote-retrain-XXXXXX)}"
  OUT="${OUT:-$WORK/backbone.onnx}"
  DATA="$WORK/data"
  $T.build_data --out "$DATA" --tiny --workers 1 --quiet
  FIRST=(--smoke --hop 2 --closure-head --threads 1 --cache "$WORK/cache")
  NETS=("1 16 20 0" "2 16 20 1")
  DISTILL=(--iters 20 --batch 32 --threads 1)
  CALIBRATE=(--split heldout --max-utts 8)      # a tiny build has almost no validation utterances
else
  WORK="${WORK:-out/retrain}"
  OUT="${OUT:-engine/assets/backbone.onnx}"
  [ -f "$DATA/manifest.json" ] || { echo "retrain_backbone.sh: no data set in $DATA: build it with" \
    "$PY -m emote.engine.training.build_data --out $DATA" >&2; exit 1; }
  FIRST=(--data "$DATA" --eval-clips 200 --distill-iters 3000 --pairs 16384 --teacher-steps 12 --batch 160 --hop 2
         --threads 2 --closure-head --context 3 --iters 12000 --dim 96 --layers 3 --audio-layers 1 --voice-warp 0.8
         --guidance 2.0)
  NETS=("2 96 24000 0" "3 128 16000 0" "2 128 16000 1" "3 96 16000 2")
  DISTILL=(--iters 2000)
  CALIBRATE=()
fi
mkdir -p "$WORK"
step() { echo "retrain_backbone.sh: [$(date +%H:%M:%S)] $*"; }

step "1/8 the first motion model"
nice -n 10 $T.train_backbone "${FIRST[@]}" --out "$WORK/first.onnx" --card "$WORK/first_card.md" --report "$WORK/first.json"
step "2/8 closure nets: ${NETS[*]} (layers dim iterations seed)"
merged=()
for net in "${NETS[@]}"; do
  set -- $net
  nice -n 10 $T.closure_net "$WORK/first.onnx" --data "$DATA" --layers "$1" --dim "$2" --iters "$3" --seed "$4" \
      --out "$WORK/closure_$1x$2_s$4.onnx"
  merged+=("$WORK/closure_$1x$2_s$4.onnx")
done
step "3/8 their ensemble"
nice -n 10 $T.closure_net "$WORK/first.onnx" --merge "${merged[@]}" --out "$WORK/ensemble.onnx"
step "4/8 the second motion model (seed 1)"
nice -n 10 $T.train_backbone "${FIRST[@]}" --seed 1 --out "$WORK/second.onnx" --card "$WORK/second_card.md" \
    --report "$WORK/second.json"
step "5/8 the jaw ensemble"
$T.jaw_ensemble "$WORK/ensemble.onnx" --with "$WORK/second.onnx"
step "6/8 calibration (closure threshold 0.2: see the model card)"
nice -n 10 $T.calibrate "$WORK/ensemble.onnx" --data "$DATA" --closure-threshold 0.2 "${CALIBRATE[@]}"
step "7/8 split, then the ensemble distilled into one motion model"
$T.split "$WORK/ensemble.onnx" --repeats 20
nice -n 10 $T.ensemble_distill "$WORK/ensemble.onnx" --data "$DATA" "${DISTILL[@]}" --out "$WORK/distilled.onnx"
step "8/8 written as $OUT (and its .cond.onnx)"
$T.split "$WORK/distilled.onnx" --join --out "$WORK/distilled_whole.onnx"
mkdir -p "$(dirname "$OUT")"
$T.split "$WORK/distilled_whole.onnx" --out "$OUT" --repeats 20
step "done: score it with EMOTE_BACKBONE_MODEL=$OUT $PY -m emote.benchmarks.harness --generator backbone --render 60"
