"""``squeezelab inspect | export``: a finished model file reported byte by byte, or exported
to ONNX with the metadata an app needs to prepare its inputs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from squeezelab.cli import DefaultsHelpFormatter, check_checkpoint


def add_commands(sub: argparse._SubParsersAction) -> None:
    fmt = DefaultsHelpFormatter

    p = sub.add_parser("inspect", help="per-layer size report of a .sqz file")
    p.add_argument("sqz")
    p.add_argument("--fp32", default=None, help="the fp32 checkpoint, for safetensors/gzip/zstd "
                   "ratios (zstd needs the [zstd] extra: pip install 'squeezelab[zstd]')")
    p.add_argument("--json", dest="json_out", default=None, help="also write the report here")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("export", help="export a checkpoint or .sqz to ONNX (checked against "
                       "onnxruntime); needs the [export] extra: pip install "
                       "'squeezelab[export]'", formatter_class=fmt)
    p.add_argument("model", help="checkpoint or .sqz file")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="default: 3 x the image size the model was trained at")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--dynamo", action="store_true", help="use the torch.export exporter")
    p.set_defaults(func=cmd_export)


def cmd_inspect(args: argparse.Namespace) -> int:
    from squeezelab.compress.format.size_report import format_size_report, size_report
    from squeezelab.compress.format.sqz import read_sqz
    from squeezelab.train.evaluate import describe_protocol

    path = Path(args.sqz)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    fp32 = None
    if args.fp32:
        from squeezelab.checkpoint import checkpoint_paths
        from squeezelab.extras import require_extras

        require_extras(("zstandard",), "squeezelab inspect --fp32")
        args.fp32 = check_checkpoint(args.fp32)
        fp32 = checkpoint_paths(args.fp32)[1]
    sqz = read_sqz(path)
    report = size_report(sqz, fp32=fp32)
    spec = sqz.model
    print(f"{path}: model {spec['name']} {spec['kwargs']}, "
          f"{len(sqz.class_names or [])} classes")
    if "top1" in sqz.meta and sqz.meta["top1"] is not None:
        scored = describe_protocol(sqz.meta.get("protocol")) or "scoring not recorded"
        print(f"top-1 recorded at compression: {sqz.meta['top1']:.4f} ({scored})")
    print(format_size_report(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"rows": list(report), "totals": report.totals}, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from squeezelab.export import (
        CHECK_MODULES,
        DYNAMO_MODULES,
        EXPORT_MODULES,
        check_onnx,
        export_onnx,
        onnx_metadata,
    )
    from squeezelab.extras import require_extras
    from squeezelab.inference import load_model, trained_image_size

    # all it needs, before anything is loaded or written: a missing one is one error line
    require_extras(EXPORT_MODULES + CHECK_MODULES + (DYNAMO_MODULES if args.dynamo else ()),
                   "squeezelab export" + (" --dynamo" if args.dynamo else ""))
    if Path(args.model).suffix != ".sqz":
        args.model = check_checkpoint(args.model)
    model, meta = load_model(args.model)
    if args.input_size:
        size = tuple(args.input_size)
    else:
        side = trained_image_size(meta) or 224
        height, width = (side, side) if isinstance(side, int) else side
        size = (int(meta["model"].get("kwargs", {}).get("in_chans", 3)), height, width)
    print(f"exporting {args.model} with input 1x{size[0]}x{size[1]}x{size[2]} (batch dynamic)",
          flush=True)
    out = export_onnx(model, args.onnx, size, opset=args.opset, dynamo=args.dynamo,
                      metadata=onnx_metadata(meta))
    diff = check_onnx(model, out, torch.randn(3, *size))
    print(f"wrote {out} ({out.stat().st_size:,} bytes); onnxruntime max abs diff {diff:.2e}")
    if diff > 1e-4:
        raise ValueError(f"{out}: onnxruntime differs from PyTorch by {diff:.2e} (> 1e-4)")
    return 0
