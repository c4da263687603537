#!/usr/bin/env bash
# The gpu profile of chapters 05, 07, 08 and 09 on a bare GPU machine (torch, transformers, peft,
# accelerate, onnxruntime, pandas and matplotlib present; no papermill, nbdev or bitsandbytes; no
# network). What is missing travels as files that `make gpu-carry` prepares, in parts small enough
# for one transfer each.
#
# Usage:
#   tools/gpu_run.sh pack CARRY          split CARRY/all into CARRY/part1, part2, ... (<= 52 MiB
#                                        each), each with CARRY/partN/manifest.tsv of all parts
#   tools/gpu_run.sh stage CARRY/partN   on the GPU machine, one call per part: keep it in the stage
#   tools/gpu_run.sh assemble            on the GPU machine: join the split files (run does it)
#   tools/gpu_run.sh run [OUT]           on the GPU machine: stage the parts under gpu-carry/,
#                                        check that every part is staged, install, run the
#                                        chapters into an emptied runs/gpu, write OUT
#                                        (default $OUT)
#
# `run` writes OUT/gpu_run.log and OUT/gpu_run.tar.gz (runs/gpu/: the executed notebooks and
# results/*.json; split into gpu_run.tar.gz.part-NN when over 15 MiB), and ends within 9 minutes:
# each chapter's time limit is its share of what is left of that budget when it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${FC_GPU_STAGE:-/tmp/fc-gpu}
CARRY=${FC_GPU_CARRY:-gpu-carry}
PART_BYTES=${FC_GPU_PART_BYTES:-$((52 * 1024 * 1024))}  # the working tree travels too: 64 MiB in all
CHUNK=${FC_GPU_CHUNK:-40M}
TOTAL_S=${FC_GPU_TOTAL_S:-540}  # the whole run, installing and packing included
PACK_S=30                       # kept back for packing the results
KILL_GRACE_S=10                 # after the interrupt, before the kill
RETURN_BYTES=$((15 * 1024 * 1024))  # a returned file may be 16 MiB at most
# chapter:weight. A chapter's time limit is its weight's share of the time left when it starts,
# so the time a chapter does not use goes to the ones after it.
CHAPTERS=(05_contrastive:100 07_finetuning:150 08_adapters:100 09_lora_peft:160)

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

pack() {
    # First fit, largest file first: the fewest parts, so the fewest device calls.
    local carry=$1 file rel bytes i chunk part
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
    # Every part carries the list of all parts, so whichever is staged, `run` knows what to expect.
    for part in "$carry"/part*; do
        find "$part" -type f -printf "$(basename "$part")\t%s\t%P\n"
    done | sort >"$carry/manifest.tsv"
    for part in "$carry"/part*; do cp "$carry/manifest.tsv" "$part/"; done
    rm "$carry/manifest.tsv"
    du -sh "$carry"/part*
}

stage() {
    mkdir -p "$STAGE/carry"
    cp -r "$1/." "$STAGE/carry/"
    echo "staged $1 ($(du -sh "$1" | cut -f1)) into $STAGE/carry"
}

check_staged() {
    # A file counts as staged when it is there with its size, or, for a chunk of a split file,
    # when that file was already joined by an earlier `run`.
    local manifest=$STAGE/carry/manifest.tsv part bytes rel
    local -A missing=()
    [ -f "$manifest" ] || { echo "nothing staged: run \`stage\` for every part first" >&2; return 1; }
    while IFS=$'\t' read -r part bytes rel; do
        [ "$rel" = manifest.tsv ] && continue
        if [ "$(stat -c %s "$STAGE/carry/$rel" 2>/dev/null)" = "$bytes" ]; then continue; fi
        [[ $rel == *.chunk-[0-9][0-9] ]] && [ -f "$STAGE/carry/${rel%.chunk-*}" ] && continue
        missing[$part]=1
    done <"$manifest"
    if ((${#missing[@]})); then
        echo "not staged (or incomplete): ${!missing[*]}; stage them, then run again" >&2
        return 1
    fi
}

assemble() {
    local first base
    while IFS= read -r -d '' first; do
        base=${first%.chunk-00}
        cat "$base".chunk-* >"$base" && rm "$base".chunk-*
    done < <(find "$STAGE/carry" -name '*.chunk-00' -print0)
}

install_carried() {
    local raw=$STAGE/carry/data/FashionMNIST/raw  # where data.py looks under $FC_DATA_HOME
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$STAGE/site" "$STAGE"/carry/wheels/*.whl
    mkdir -p "$raw"
    cp "$STAGE"/carry/fashion-mnist/*.gz "$raw/"
}

run_chapters() {
    local i j chapter weight weight_left limit failed=0
    export PYTHONPATH="$STAGE/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" FC_DATA_HOME="$STAGE/carry/data"
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
    export FC_RUN_ID=${FC_RUN_ID:-gpu-$(date -u +%Y%m%dT%H%M%SZ)}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c 'import torch, transformers, peft, bitsandbytes, nbdev
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "transformers", transformers.__version__, "peft", peft.__version__,
      "bitsandbytes", bitsandbytes.__version__, "nbdev", nbdev.__version__)'
    for ((i = 0; i < ${#CHAPTERS[@]}; i++)); do
        chapter=${CHAPTERS[i]%%:*} weight=${CHAPTERS[i]##*:} weight_left=0
        for ((j = i; j < ${#CHAPTERS[@]}; j++)); do ((weight_left += ${CHAPTERS[j]##*:})); done
        limit=$(((TOTAL_S - PACK_S - SECONDS) * weight / weight_left - KILL_GRACE_S))
        if ((limit < 10)); then
            echo "$chapter: skipped, no time left ($SECONDS s used of $TOTAL_S)"
            failed=1
            continue
        fi
        echo "$chapter: limit $limit s (at $SECONDS s)"
        timeout -s INT -k "$KILL_GRACE_S" "$limit" \
            python3 -m foundation_course.cli run "$chapter" --profile gpu --out runs \
            || { echo "$chapter: stopped or failed (limit $limit s)"; failed=1; }
    done
    return $failed
}

pack_results() {
    # Only what the device returns: no artefacts (07's saved weights alone are ~90 MB).
    local out=$1 archive=$1/gpu_run.tar.gz bytes
    mkdir -p runs/gpu/results
    (cd runs && find gpu -maxdepth 1 -name '*.ipynb' && find gpu/results -name '*.json') \
        | tar -czf "$archive" -C runs -T -
    bytes=$(stat -c %s "$archive")
    echo "gpu_run.tar.gz: $bytes bytes"
    if ((bytes > RETURN_BYTES)); then
        split -b "$RETURN_BYTES" -d "$archive" "$archive.part-" && rm "$archive"
        echo "split into $(ls "$archive".part-* | wc -l) parts: join them with cat"
    fi
}

run() {
    local out=${1:-${OUT:?give the output folder as an argument or in OUT}} part status=0
    mkdir -p "$out"
    exec > >(tee "$out/gpu_run.log") 2>&1
    for part in "$CARRY"/part*; do [ -d "$part" ] && stage "$part"; done
    check_staged
    assemble
    install_carried
    rm -rf runs/gpu
    run_chapters || status=$?
    pack_results "$out"
    echo "wall time: $SECONDS s"
    return $status
}

case ${1:-} in
    pack) pack "${2:?pack CARRY}" ;;
    stage) stage "${2:?stage CARRY/partN}" ;;
    assemble) assemble ;;
    run) shift; run "$@" ;;
    *) usage ;;
esac
