"""Time ``load_compressed`` of a squeezenet1_0-sized .sqz file (target: <= 100 ms on 2 cores).

The file is SqueezeNet v1.0 at 1000 classes, 33% magnitude-pruned and 6-bit weight-shared
(the paper's setting), so it has the sizes and stream lengths of the real thing; the weights
are the random initialisation, which does not change how long decoding takes.

    python benchmarks/load_time.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab import create_model  # noqa: E402
from squeezelab.compress.format.sqz import load_compressed, save_compressed  # noqa: E402
from squeezelab.compress.pruning.magnitude import PruneConfig, prune_  # noqa: E402
from squeezelab.compress.quantization.weight_sharing import (  # noqa: E402
    WeightSharingConfig,
    share_weights_,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model("squeezenet1_0")
    prune_(model, PruneConfig(sparsity=0.33))
    share_weights_(model, WeightSharingConfig(bits=6))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "squeezenet1_0.sqz"
        save_compressed(model, path)
        size = path.stat().st_size
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            expected = model.eval()(x)
        load_compressed(path)  # first call: imports and allocator warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            loaded = load_compressed(path)
            times.append(time.perf_counter() - t0)
        with torch.no_grad():
            exact = torch.equal(loaded(x), expected)
    result = {"file_bytes": size, "parameters": sum(p.numel() for p in create_model(
              "squeezenet1_0").parameters()), "repeats": args.repeats,
              "median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
              "max_ms": 1000 * max(times), "outputs_equal_in_memory_model": exact,
              "torch_threads": torch.get_num_threads()}
    print(f"{size:,} bytes; load_compressed median {result['median_ms']:.1f} ms "
          f"(min {result['min_ms']:.1f}, max {result['max_ms']:.1f}) over {args.repeats}; "
          f"outputs equal: {exact}")
    write_result("load_time", result, args.output)


if __name__ == "__main__":
    main()
