"""CPU latency of a sentiment classifier: PyTorch fp32 against int8 (dynamic) and onnxruntime.

Usage: python benchmarks/bench_deployment.py [MODEL_FOLDER] [--batch 32] [--repeats 15]
MODEL_FOLDER is a saved Hugging Face classifier with safetensors weights (default: an untrained
MiniLM classifier; the speed does not depend on the weights). The runtimes are measured
round-robin in one process, so that load from other programs hits all alike; ratios are of
medians. ONNX needs the deploy extra: pip install 'foundation_course[deploy]'."""

import argparse
import tempfile
from pathlib import Path

import torch

from foundation_course.data import load_sentiment, load_text_model, load_tokenizer
from foundation_course.deployment import (
    OnnxClassifier,
    export_onnx,
    interleaved_latencies,
    latency_summary,
    quantize_int8,
    require_safetensors,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if Path(args.model).is_dir():
        require_safetensors(args.model)
    model = load_text_model(args.model, "sequence-classification").eval()
    tokenizer = load_tokenizer(args.model)
    texts = load_sentiment("rt-snippets").test.texts[: args.batch]
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = OnnxClassifier(export_onnx(model, tokenizer, f"{tmp}/m.onnx"))
        runners = {"fp32": model, "int8": quantize_int8(model), "onnxruntime": onnx_model}
        calls = {n: (lambda m=m: m(**batch)) for n, m in runners.items()}
        times = interleaved_latencies(calls, args.repeats)
    summary = {n: latency_summary(t, args.batch) for n, t in times.items()}
    print(
        f"batch {args.batch}, {args.repeats} interleaved rounds, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for name, s in summary.items():
        speedup = summary["fp32"]["p50_ms"] / s["p50_ms"]
        print(
            f"  {name:12s} p50 {s['p50_ms']:8.1f} ms  p95 {s['p95_ms']:8.1f} ms  "
            f"{s['throughput']:7.1f} sentences/s  speedup vs fp32 {speedup:.2f}x"
        )


if __name__ == "__main__":
    main()
