"""Time ``load_compressed`` of a squeezenet1_0-sized .sqz file (targets: <= 100 ms on 2 cores,
then <= 20 ms), written with each entropy coder.

The file is SqueezeNet v1.0 at 1000 classes, 33% magnitude-pruned and 6-bit weight-shared
(``--sparsity 0.67`` keeps 33% instead, the paper's meaning), so it has the sizes and stream
lengths of the real thing; the weights are the random initialisation, which does not change
how long decoding takes. Each coder writes its own file and is timed in the same run.

    python benchmarks/load_time.py [--repeats 20] [--coders auto huffman ans ans-v5 adaptive]

``ans-v5`` writes the ANS streams as format version 5 did (constriction's AnsCoder, which
version 6 replaced with our own table-lookup rANS), so the two decoders are timed in one run.
``first_ms`` is the first load in the process: it includes
importing numba and loading the compiled decoder from its cache (compiling it, the very first
time on a machine).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab import create_model  # noqa: E402
from squeezelab.compress.coding import ans, rans  # noqa: E402
from squeezelab.compress.format import sqz, streams  # noqa: E402
from squeezelab.compress.format.sqz import load_compressed, save_compressed  # noqa: E402
from squeezelab.compress.pruning.magnitude import PruneConfig, prune_  # noqa: E402
from squeezelab.compress.quantization.weight_sharing import (  # noqa: E402
    WeightSharingConfig,
    share_weights_,
)


@contextlib.contextmanager
def writer(coder: str):
    """(the coder save_compressed is asked for); for ``ans-v5``, the version-5 writer."""
    if coder != "ans-v5":
        yield coder
        return
    saved = streams.rans_encode, streams.rans_encode_segments, sqz.VERSION
    streams.rans_encode, streams.rans_encode_segments = ans.ans_encode, ans.ans_encode_segments
    sqz.VERSION = 5
    try:
        yield "ans"
    finally:
        streams.rans_encode, streams.rans_encode_segments, sqz.VERSION = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--coders", nargs="+", default=["auto", "huffman", "ans", "ans-v5"],
                        choices=("auto", "huffman", "ans", "ans-v5", "adaptive", "smallest"),
                        help="write the file with each coder and time each (one run, so the "
                        "ratios hold on a busy machine)")
    parser.add_argument("--sparsity", type=float, default=0.33,
                        help="fraction pruned (0.33: the original benchmark; 0.67: 33%% kept)")
    parser.add_argument("--spread-filters", type=float, default=0.0, metavar="OCTAVES",
                        help="scale each layer's filters from 2**-OCTAVES to 2**OCTAVES before "
                        "pruning, as trained filters differ in scale (random ones do not): the "
                        "ANS coder then codes indices in contexts, which this times too")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model("squeezenet1_0")
    if args.spread_filters:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    scale = torch.logspace(-args.spread_filters, args.spread_filters,
                                           p.shape[0], base=2)
                    p.mul_(scale[torch.randperm(p.shape[0])].view(-1, *[1] * (p.dim() - 1)))
    prune_(model, PruneConfig(sparsity=args.sparsity))
    share_weights_(model, WeightSharingConfig(bits=6))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = model.eval()(x)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for coder in args.coders:
            path = Path(tmp) / f"squeezenet1_0_{coder}.sqz"
            with writer(coder) as asked:
                save_compressed(model, path, coder=asked)
            t0 = time.perf_counter()
            load_compressed(path)  # first call: imports, allocator warm-up, numba's cache
            first_ms = 1000 * (time.perf_counter() - t0)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                loaded = load_compressed(path)
                times.append(time.perf_counter() - t0)
            with torch.no_grad():
                exact = torch.equal(loaded(x), expected)
            from squeezelab.compress.format.sqz import read_sqz

            contexts = sum(e.get("index_contexts", 1) > 1 for e in read_sqz(path).entries)
            rows[coder] = {"file_bytes": path.stat().st_size, "layers_with_contexts": contexts,
                           "format_version": read_sqz(path).version, "first_ms": first_ms,
                           "median_ms": 1000 * statistics.median(times),
                           "min_ms": 1000 * min(times), "max_ms": 1000 * max(times),
                           "outputs_equal_in_memory_model": exact}
            print(f"{coder:>8}: {path.stat().st_size:,} bytes; load_compressed median "
                  f"{rows[coder]['median_ms']:.1f} ms (min {rows[coder]['min_ms']:.1f}, max "
                  f"{rows[coder]['max_ms']:.1f}) over {args.repeats}; outputs equal: {exact}")
    first = rows[args.coders[0]]
    result = {"parameters": sum(p.numel() for p in create_model("squeezenet1_0").parameters()),
              "sparsity": args.sparsity, "weight_bits": 6, "repeats": args.repeats,
              "spread_filters_octaves": args.spread_filters,
              # the first coder's figures at the top level, as the earlier results have them
              "file_bytes": first["file_bytes"], "median_ms": first["median_ms"],
              "min_ms": first["min_ms"], "max_ms": first["max_ms"],
              "outputs_equal_in_memory_model": first["outputs_equal_in_memory_model"],
              "coders": rows, "rans_compiled": rans.compiled(),
              "torch_threads": torch.get_num_threads(),
              "load_average": os.getloadavg()}
    write_result("load_time", result, args.output)


if __name__ == "__main__":
    main()
