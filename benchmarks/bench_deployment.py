"""CPU latency of the sentiment classifier: PyTorch fp32 against int8 (dynamic) and onnxruntime, measured in one run.

Usage: python benchmarks/bench_deployment.py [MODEL_FOLDER] [--batch 32] [--repeats 15]
MODEL_FOLDER is a saved Hugging Face classifier (default: an untrained MiniLM classifier; the speed does not depend on the weights).
Runtimes are measured round-robin so that load from other programs hits all alike; ratios are of medians."""
import argparse
import tempfile

import torch

from foundation_course.data import load_sentiment, load_text_model, load_tokenizer
from foundation_course.deployment import OnnxClassifier, export_onnx, interleaved_latencies, latency_summary, quantize_int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    model = load_text_model(args.model, "sequence-classification").eval()
    tokenizer = load_tokenizer(args.model)
    texts = load_sentiment("rt-snippets").test.texts[: args.batch]
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)
    with tempfile.TemporaryDirectory() as tmp:
        runners = {"fp32": model, "int8": quantize_int8(model), "onnxruntime": OnnxClassifier(export_onnx(model, tokenizer, f"{tmp}/m.onnx"))}
        times = interleaved_latencies({n: (lambda m=m: m(**batch)) for n, m in runners.items()}, args.repeats)
    summary = {n: latency_summary(t, args.batch) for n, t in times.items()}
    print(f"batch {args.batch}, {args.repeats} interleaved rounds, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, s in summary.items():
        print(f"  {name:12s} p50 {s['p50_ms']:8.1f} ms  p95 {s['p95_ms']:8.1f} ms  {s['throughput']:7.1f} sentences/s"
              f"  speedup vs fp32 {summary['fp32']['p50_ms'] / s['p50_ms']:.2f}x")


if __name__ == "__main__":
    main()
