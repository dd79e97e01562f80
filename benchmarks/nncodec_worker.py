"""The NNCodec side of ``nncodec_compare.py``; runs in NNCodec's own environment (numpy<2).

    python nncodec_worker.py WEIGHTS.npz SETTINGS.json OUT_DIR

Codes the float tensors of WEIGHTS.npz with NNCodec (ISO/IEC 15938-17 reference software,
DeepCABAC) once per setting of SETTINGS.json (a list of {"name", "approx_method", "qp"}),
decodes each bitstream, and writes OUT_DIR/<name>.npz (the decoded tensors) and
OUT_DIR/results.json (bytes, encode and decode seconds per setting).

NNCodec's package imports dataset helpers (pandas, cv2, h5py, scikit-learn, torchvision, ...)
that ``nncodec.nn.encode/decode`` never call: where those are missing they are replaced by
inert stand-ins, so that the codec runs without them.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

_UNUSED = ("pandas", "cv2", "h5py", "sklearn", "torchvision", "wandb", "tqdm", "PIL",
           "matplotlib", "scipy")


class _StandInType(type):
    """Any attribute of a stand-in, and any call of one, is another stand-in class (so that
    module-level ``transforms.Resize(256)`` runs and subclassing one works)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandInType(name, (), {})

    def __call__(cls, *args, **kwargs):
        return _StandInType("result", (), {})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandInType(name, (), {})


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def main() -> None:
    weights_path, settings_path, out_dir = sys.argv[1:4]
    missing = [m for m in _UNUSED if importlib.util.find_spec(m) is None]
    sys.meta_path.insert(0, _StandInFinder(missing))
    import nncodec.nn as nnc
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(np.load(weights_path))
    results = {"stand_ins": missing, "nncodec": _version(), "settings": []}
    for setting in json.loads(Path(settings_path).read_text()):
        args = {"approx_method": setting["approx_method"], "qp": setting["qp"],
                "verbose": False, "results": str(out)}
        t0 = time.perf_counter()
        bitstream = nnc.encode({k: v.copy() for k, v in params.items()}, args=args)
        t1 = time.perf_counter()
        decoded = nnc.decode(bitstream, args={"verbose": False})
        t2 = time.perf_counter()
        np.savez(out / f"{setting['name']}.npz",
                 **{k: np.asarray(v, dtype=np.float32) for k, v in decoded.items()})
        results["settings"].append({**setting, "bytes": len(bitstream),
                                    "encode_s": t1 - t0, "decode_s": t2 - t1})
        print(f"{setting['name']}: {len(bitstream):,} bytes", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nncodec")
    except PackageNotFoundError:  # importable but not installed as a distribution
        return "unknown"


if __name__ == "__main__":
    main()
