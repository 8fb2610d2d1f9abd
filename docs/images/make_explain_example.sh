#!/usr/bin/env bash
# Regenerate the example figures of docs/explain.md (docs/images/explain_*.png).
#
#   bash docs/images/make_explain_example.sh [WORK_DIR]      # default /tmp/explain_example
#
# Tiny on purpose: 4 synthetic 800 x 800 scenes (64 km), two small-preset models trained
# for 60 steps on 384 px patches (24 feature cells, so every tap of rates 6/12/18 reads
# data during training) that differ only in their ASPP rates, then `icecontext explain
# --compare` of the same SOD target (the young ice of the reference chart, a thin strip
# along a coast): HiResCAM at the ASPP input (the defaults; the figures), HiResCAM at
# decoders.SOD.project (the former default layer) and Grad-CAM at the ASPP input. The
# models are barely trained: the figures show what the command draws and how to read it,
# not a study result.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${1:-/tmp/explain_example}"
IC="${IC:-$REPO/.venv/bin/icecontext}"
PY="${PY:-$REPO/.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one thread: faster than two on a shared CPU

mkdir -p "$WORK"
if [ ! -f "$WORK/data/20190421T020053_dmi_prep.nc" ]; then
    "$IC" synth --out "$WORK/data" --scenes 4 --height 800 --width 800 --seed 11 --no-progress
fi

train() {  # train NAME RATES
    "$IC" train --config "$REPO/configs/train/small_cpu.yaml" \
        data.root="$WORK/data" 'data.features=[sar,incidence]' \
        data.patch_size=384 data.batch_size=4 data.workers=0 data.patches_per_epoch=128 \
        data.splits.val_count=1 \
        train.max_steps=60 train.max_epochs=null train.scheduler.warmup_steps=5 \
        train.validation.tile=512 \
        "model.aspp.rates=$2" \
        output.root="$WORK/runs" output.name="$1"
}
[ -f "$WORK/runs/rates-1/checkpoints/best.ckpt" ] || train rates-1 '[1]'
[ -f "$WORK/runs/rates-6-12-18/checkpoints/best.ckpt" ] || train rates-6-12-18 '[6,12,18]'

# the scene of seed 11 (the first): land, open water and a thin strip of young ice
SCENE="$WORK/data/20190421T020053_dmi_prep.nc"
explain() {  # explain OUT_NAME EXTRA_ARGS...
    local name="$1"
    shift
    "$IC" explain --checkpoint "$WORK/runs/rates-1" --compare "$WORK/runs/rates-6-12-18" \
        --scenes "$SCENE" --task SOD --mask reference --class 2 \
        --device cpu --max-size 400 --out "$WORK/explain/$name" "$@"
}
explain hirescam-layer3  # the defaults: HiResCAM at the ASPP input (encoder.layer3)
explain hirescam-project --layer decoders.SOD.project
explain gradcam-layer3 --method gradcam

# Copy the figures, reduced in width to stay small in the repository (RGB: a palette
# would change the chart colours).
"$PY" - "$WORK/explain/hirescam-layer3" "$REPO/docs/images" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for name, width in (("compare.png", 1200), ("distance.png", 1000)):
    img = Image.open(src / name).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    out = dst / f"explain_{name}"
    img.save(out, optimize=True)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB")
EOF
