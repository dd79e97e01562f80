"""Our .sqz coder against NNCodec (the MPEG neural-network coding standard's reference software,
ISO/IEC 15938-17, DeepCABAC) on the same weights.

    python benchmarks/nncodec_compare.py MODEL.sqz --nncodec-python NNC_ENV/bin/python \
        [--qps -38 -34 -30 -26] [--limit-test N] [-o benchmarks/results/nncodec_MODEL.json]

The weights are those MODEL.sqz decodes to. Ours: the file as it is, the same weights re-coded
with each of this version's ``--coders`` ("auto": per-layer Huffman or rANS with index
contexts; "smallest": also the adaptive coder; lossless: the same top-1), that plus
half-precision floats, and that plus levels of ``--dense-bits`` bits for the biases and
BatchNorm tensors. NNCodec codes every float tensor (weights, biases,
BatchNorm) at each quantization parameter ``qp`` in its uniform and its codebook mode; each
decoded model is scored here with the protocol the model was trained with. Bytes are the
whole file or bitstream; times are one encode and one decode (ours: ``load_compressed``
median of 5).

NNCodec needs its own environment (``numpy<2``, which squeezelab's numpy floor excludes)::

    python -m venv nnc && nnc/bin/pip install torch==2.13.0 "numpy<2" pybind11 setuptools wheel
    nnc/bin/pip install --no-deps --no-build-isolation nncodec==2.1.3

``nncodec_worker.py`` runs there (with stand-ins for the dataset packages NNCodec's import
pulls in and its codec never uses). Out of CI: it needs that environment and minutes of CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab.compress.format.layout import CODER_CHOICES  # noqa: E402
from squeezelab.compress.format.sqz import (  # noqa: E402
    VERSION,
    load_compressed,
    round_stored_floats_,
    save_compressed,
)
from squeezelab.data import load_split, resolve_default_cifar10  # noqa: E402
from squeezelab.train.evaluate import EvalProtocol, evaluate_data  # noqa: E402

WORKER = Path(__file__).resolve().parent / "nncodec_worker.py"


def _load_seconds(path: Path, repeats: int = 5) -> float:
    load_compressed(path)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        load_compressed(path)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ours(name: str, source: Path, tmp: Path, coder: str, float_dtype: str,
          dense_bits: int | None, top1, **save_kwargs) -> dict:
    """The row of ``source``'s weights re-coded with ``coder`` and stored floats as asked."""
    variant = load_compressed(source, keep_shared=True)
    round_stored_floats_(variant, float_dtype, dense_bits)
    t0 = time.perf_counter()
    path = save_compressed(variant, tmp / f"{coder}_{float_dtype}_{dense_bits}.sqz",
                           coder=coder, float_dtype=float_dtype, dense_bits=dense_bits,
                           **save_kwargs)
    encode_s = time.perf_counter() - t0
    return {"coder": "squeezelab", "setting": name, "bytes": path.stat().st_size,
            "top1": top1(load_compressed(path)),  # scored, not assumed
            "encode_s": encode_s, "decode_s": _load_seconds(path)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sqz", help="the compressed model whose weights both coders code")
    p.add_argument("--nncodec-python", required=True,
                   help="python of an environment with nncodec==2.1.3 installed")
    p.add_argument("--qps", type=int, nargs="+", default=[-38, -34, -30, -26],
                   help="NNCodec quantization parameters (step 2**(qp/4): lower is finer)")
    p.add_argument("--methods", nargs="+", default=["uniform", "codebook"])
    p.add_argument("--coders", nargs="+", default=["auto", "smallest"],
                   choices=CODER_CHOICES, help="our coders to re-code the weights with")
    p.add_argument("--dense-bits", type=int, nargs="+", default=[8],
                   help="also store the biases and BatchNorm tensors as levels of these bits")
    p.add_argument("--data", default=None, help="test data (default: the model's own)")
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()

    source = Path(args.sqz)
    model = load_compressed(source, keep_shared=True)
    meta = model.sqz_header.get("meta", {})
    # the protocol the file records its top-1 under (compress writes it), else as trained
    protocol = (EvalProtocol.from_dict(meta["protocol"]) if isinstance(meta.get("protocol"), dict)
                else EvalProtocol.for_model(meta))
    data_source = args.data or (meta.get("config") or {}).get("data") or (
        (meta.get("compress_config") or {}).get("train", {}).get("data")
        or resolve_default_cifar10())
    test = load_split(data_source, "test", limit=args.limit_test)

    def top1(m: torch.nn.Module) -> float:
        return evaluate_data(m.eval(), test, protocol)["top1"]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loaded = load_compressed(source)
        base_top1 = top1(loaded)
        rows.append({"coder": "squeezelab", "setting": f"{source.name} as given",
                     "bytes": source.stat().st_size, "top1": base_top1,
                     "decode_s": _load_seconds(source)})
        variants = [("float32", None), ("float16", None),
                    *(("float16", bits) for bits in args.dense_bits)]
        for coder in args.coders:
            for float_dtype, dense_bits in variants:
                name = " + ".join([f"v{VERSION} {coder} coder",
                                   *([float_dtype] if float_dtype != "float32" else []),
                                   *([f"{dense_bits}-bit dense"] if dense_bits else [])])
                rows.append(_ours(name, source, tmp, coder, float_dtype, dense_bits, top1,
                                  class_names=model.sqz_header.get("class_names"), meta=meta))
        state = loaded.state_dict()
        floats = {k: v.numpy() for k, v in state.items() if v.is_floating_point()}
        np.savez(tmp / "weights.npz", **floats)
        settings = [{"name": f"{m}_qp{qp}", "approx_method": m, "qp": qp}
                    for m in args.methods for qp in args.qps]
        (tmp / "settings.json").write_text(json.dumps(settings))
        subprocess.run([args.nncodec_python, str(WORKER), str(tmp / "weights.npz"),
                        str(tmp / "settings.json"), str(tmp / "nnc")], check=True)
        worker = json.loads((tmp / "nnc" / "results.json").read_text())
        for setting in worker["settings"]:
            decoded = dict(np.load(tmp / "nnc" / f"{setting['name']}.npz"))
            missing = sorted(set(floats) - set(decoded))
            if missing:
                raise RuntimeError(f"NNCodec did not return {missing[:3]}")
            restored = {k: torch.from_numpy(decoded[k]).reshape(v.shape) if k in floats else v
                        for k, v in state.items()}
            loaded.load_state_dict(restored)
            rows.append({"coder": "nncodec", "setting": setting["name"],
                         "bytes": setting["bytes"], "top1": top1(loaded),
                         "encode_s": setting["encode_s"], "decode_s": setting["decode_s"]})
    result = {"benchmark": "nncodec_compare", "model": str(source),
              "parameters": sum(v.numel() for v in state.values() if v.is_floating_point()),
              "test_images": len(test), "protocol": protocol.to_dict(),
              "nncodec": worker["nncodec"], "nncodec_stand_ins": worker["stand_ins"],
              "rows": rows}
    for r in rows:
        print(f"{r['coder']:<10} {r['setting']:<36} {r['bytes']:>10,} B  top-1 "
              f"{r['top1']:.4f}  decode {1e3 * r['decode_s']:.1f} ms")
    write_result("nncodec_compare", result, args.output)


if __name__ == "__main__":
    main()
