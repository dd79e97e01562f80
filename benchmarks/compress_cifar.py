"""Deep Compression of a trained CIFAR-10 model into a .sqz: size and accuracy, measured.

Runs the whole pipeline (prune -> retrain -> share weights -> fine-tune centroids -> Huffman
-> .sqz -> load back) on a trained checkpoint with a recipe's ``compress:`` section, its config
built by the one function ``squeezelab compress --recipe`` uses too (``compress_config_for``:
the recipe over the checkpoint's own data and training settings), so the two write the same
file; then
records the dense and compressed CIFAR-10 test top-1 (of the file as loaded back), the file
size, the ratio against the checkpoint's fp32 safetensors file, and bits per original
parameter, everything included.

    python benchmarks/compress_cifar.py CHECKPOINT --recipe recipes/compress_cifar10_fast.yaml \\
        --name compress_squeezenet_cifar
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab.checkpoint import checkpoint_paths, resolve_checkpoint  # noqa: E402
from squeezelab.workflows.deep_compression import compress, compress_config_for  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="trained checkpoint (e.g. runs/X/checkpoints/best)")
    parser.add_argument("--recipe", required=True, help="YAML with a compress: section")
    parser.add_argument("--name", default="compress_cifar", help="result file name")
    parser.add_argument("--out", default=None, help=".sqz path (default: runs/<name>.sqz)")
    parser.add_argument("-o", "--output", default=None,
                        help="result JSON (default: benchmarks/results/<name>.json)")
    args = parser.parse_args(argv)

    config = compress_config_for(args.checkpoint, recipe=args.recipe)
    out = Path(args.out or Path("runs") / f"{args.name}.sqz")
    result = compress(args.checkpoint, config, out)
    fp32_file = checkpoint_paths(resolve_checkpoint(args.checkpoint))[1]
    fp32_bytes = fp32_file.stat().st_size
    sqz_bytes = out.stat().st_size
    dense = result.steps[0]
    final = result.steps[-1]
    params = sum(p.numel() for p in result.loaded.parameters())
    record = {
        "checkpoint": args.checkpoint, "recipe": args.recipe, "sqz": str(out),
        "sqz_bytes": sqz_bytes, "fp32_safetensors_bytes": fp32_bytes,
        "ratio_vs_fp32_safetensors": fp32_bytes / sqz_bytes,
        "bits_per_parameter": 8 * sqz_bytes / params, "parameters": params,
        "dense_test_top1": dense.get("top1"), "compressed_test_top1": final.get("top1"),
        "top1_change_points": 100 * (final.get("top1", 0) - dense.get("top1", 0)),
        "steps": result.steps, "size_totals": result.size,
        "data_note": "CIFAR-10 JPEG copy (lossy re-encoding of the official images)",
    }
    print(f"{sqz_bytes:,} bytes ({record['bits_per_parameter']:.2f} bits/param), "
          f"{record['ratio_vs_fp32_safetensors']:.1f}x smaller than {fp32_file.name}; top-1 "
          f"{100 * record['dense_test_top1']:.2f}% -> {100 * record['compressed_test_top1']:.2f}%")
    write_result(args.name, record, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
