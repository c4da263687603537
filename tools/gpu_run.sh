#!/usr/bin/env bash
# The gpu profile of chapters 05, 07, 08 and 09 on a bare GPU machine (torch, transformers, peft,
# accelerate, onnxruntime, pandas and matplotlib present; no papermill, ipykernel or bitsandbytes;
# no network). What is missing travels as files that `make gpu-carry` prepares here, in parts small
# enough for one transfer each:
#
#   tools/gpu_run.sh pack CARRY          # here: split CARRY/all into CARRY/part1, part2, ... (<= 52 MiB)
#   tools/gpu_run.sh stage CARRY/partN   # there, one call per part: keep the part under $STAGE
#   tools/gpu_run.sh assemble            # there: join the split files of the staged parts (run does it)
#   tools/gpu_run.sh run [OUT]           # there: install, run the chapters, write OUT (default $OUT)
#
# `run` stages any parts present under gpu-carry/ first, so the last part can travel with it.
# It writes OUT/gpu_run.tar.gz (runs/gpu/: executed notebooks and results/*.json) and OUT/gpu_run.log,
# and keeps within 9 minutes of wall time: each chapter has its own time limit.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${FC_GPU_STAGE:-/tmp/fc-gpu}
PART_BYTES=${FC_GPU_PART_BYTES:-$((52 * 1024 * 1024))}  # the working tree travels too: 64 MiB in all
CHUNK=${FC_GPU_CHUNK:-40M}
# chapter:seconds. Together with install and packing they stay under 9 minutes.
CHAPTERS=(05_contrastive:100 07_finetuning:150 08_adapters:100 09_lora_peft:160)

pack() {
    # First fit, largest file first: the fewest parts, so the fewest device calls.
    local carry=$1 file rel bytes i chunk
    local -a room=()
    chunk=$(numfmt --from=iec "$CHUNK")
    find "$carry/all" -type f -size +"${chunk}c" -print0 | while IFS= read -r -d '' file; do
        split -b "$chunk" -d "$file" "$file.chunk-" && rm "$file"
    done
    rm -rf "$carry"/part*
    while read -r bytes file; do
        for ((i = 0; i < ${#room[@]}; i++)); do ((room[i] >= bytes)) && break; done
        ((i == ${#room[@]})) && room+=("$PART_BYTES")
        room[i]=$((room[i] - bytes))
        rel=${file#"$carry/all/"}
        mkdir -p "$carry/part$((i + 1))/$(dirname "$rel")"
        mv "$file" "$carry/part$((i + 1))/$rel"
    done < <(find "$carry/all" -type f -printf '%s %p\n' | sort -rn)
    rm -rf "$carry/all"
    du -sh "$carry"/part*
}

stage() {
    mkdir -p "$STAGE/carry"
    cp -r "$1/." "$STAGE/carry/"
    echo "staged $1 ($(du -sh "$1" | cut -f1)) into $STAGE/carry"
}

assemble() {
    local first base
    while IFS= read -r -d '' first; do
        base=${first%.chunk-00}
        cat "$base".chunk-* >"$base" && rm "$base".chunk-*
    done < <(find "$STAGE/carry" -name '*.chunk-00' -print0)
}

install_carried() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$STAGE/site" "$STAGE"/carry/wheels/*.whl
    mkdir -p /usr/share/datasets/fashion-mnist
    cp "$STAGE"/carry/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/
}

run_chapters() {
    local entry chapter seconds failed=0
    export PYTHONPATH="$STAGE/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" FC_DATA_HOME="$STAGE/carry/data"
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
    export FC_RUN_ID=${FC_RUN_ID:-gpu-$(date -u +%Y%m%dT%H%M%SZ)}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c 'import torch, transformers, peft, bitsandbytes; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__, "peft", peft.__version__, "bitsandbytes", bitsandbytes.__version__)'
    for entry in "${CHAPTERS[@]}"; do
        chapter=${entry%%:*} seconds=${entry##*:}
        timeout -s INT -k 10 "$seconds" python3 -m foundation_course.cli run "$chapter" --profile gpu --out runs \
            || { echo "$chapter: stopped or failed (limit ${seconds} s)"; failed=1; }
    done
    return $failed
}

run() {
    local out=${1:-${OUT:?give the output folder as an argument or in OUT}} part status=0
    mkdir -p "$out"
    exec > >(tee "$out/gpu_run.log") 2>&1
    for part in gpu-carry/part*; do [ -d "$part" ] && stage "$part"; done
    assemble
    install_carried
    run_chapters || status=$?
    echo "wall time: $SECONDS s"
    tar -czf "$out/gpu_run.tar.gz" -C runs gpu
    return $status
}

case ${1:-} in
    pack) pack "${2:?pack CARRY}" ;;
    stage) stage "${2:?stage CARRY/partN}" ;;
    assemble) assemble ;;
    run) shift; run "$@" ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
