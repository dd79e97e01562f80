"""``squeezelab eval``, ``squeezelab compare`` and ``squeezelab predict``: a model file scored
on a labelled split, two model files compared image by image, and a model file run on images.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from squeezelab.cli import (
    MODEL_PATH_HELP,
    DefaultsHelpFormatter,
    add_data_source_flags,
    parse_bool,
)


def add_eval_data_flags(p: argparse.ArgumentParser, default_data: str) -> None:
    """The flags that choose the images a model is scored on, and how (eval and compare)."""
    p.add_argument("--data", default=None, help=f"cifar10 | cifar100 | class-folder root "
                   f"(default: {default_data})")
    p.add_argument("--split", default="test")
    p.add_argument("--data-root", default=None)
    p.add_argument("--limit", type=int, default=None, help="evaluate a balanced subset")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="precision of the forward passes that score the model(s)")
    p.add_argument("--test-time-flip", type=parse_bool, default=None, metavar="BOOL",
                   help="average the logits of each image and its mirror (default: as the "
                   "model was trained, so the figure matches the run's; compare: as A was "
                   "trained, and B is scored the same way)")
    p.add_argument("--test-time-translate", type=int, default=None, metavar="PX",
                   help="also average over copies shifted PX pixels down-right and up-left "
                   "(1/4 each, the image 1/2; default: as the model was trained)")
    p.add_argument("--crops", type=int, choices=(1, 10, 144), default=1,
                   help="multi-crop testing: average the logits over the 4 corner and the "
                   "centre crops and their mirror images (10), or GoogLeNet's 144 crops (4 "
                   "scales x 3 squares x 6 crops x 2 mirrors), each at the model's input "
                   "size, from images padded by --crop-pad (models of 64 px and below) or "
                   "loaded at 256/224 of the input size (larger models)")
    p.add_argument("--crop-pad", type=int, default=None, metavar="PX",
                   help="with --crops: pad each image by PX black pixels before cropping "
                   "(default: 4, CIFAR's training crop range, for models of 64 px and below; "
                   "else 0)")
    p.add_argument("--json", dest="json_out", default=None, help="also write results here")
    add_data_source_flags(p)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 and per-class accuracy of a checkpoint or .sqz",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("checkpoint", help=MODEL_PATH_HELP)
    add_eval_data_flags(p, "the data the model was trained on, else CIFAR-10")
    p.add_argument("--int8", action="store_true",
                   help="run a .sqz file as int8 through onnxruntime, with the activation "
                   "ranges it carries (compress --int8-calibration)")
    p.add_argument("--weights", choices=("saved", "average"), default="saved",
                   help="average: a training checkpoint's moving average of the weights "
                   "(ema_decay), which the run scored, instead of the weights it holds (they "
                   "differ only in a run's checkpoints/last; best holds the average)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="paired top-1 of two models on the same images: is B "
                       "better than A, by more than the luck of the images drawn?",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("baseline", metavar="A", help=MODEL_PATH_HELP)
    p.add_argument("candidate", metavar="B", help="the model compared with A (same forms)")
    add_eval_data_flags(p, "the data A was trained on, else CIFAR-10")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("predict", help="the most likely classes of image files, from a "
                       "checkpoint or .sqz (prepared as the model's training images were)",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("model", help=MODEL_PATH_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (any format PIL reads) or folders of them")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image")
    p.add_argument("--data", default=None, help="only for model files written before the "
                   "preprocessing record: take the mean/std from this data's train split "
                   "(default: the data the model was trained on)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", type=parse_bool, default=False, metavar="BOOL",
                   help="with --data cifar10|cifar100: fetch the official archive when it is "
                   "missing")
    p.add_argument("--skip-bad-images", type=parse_bool, default=False, metavar="BOOL",
                   help="leave out files that are not readable images (say which) instead "
                   "of stopping")
    p.add_argument("--test-time-flip", type=parse_bool, default=None, metavar="BOOL",
                   help="average each image's logits with its mirror's (default: as the "
                   "model was trained)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the predictions "
                   "here")
    p.set_defaults(func=cmd_predict)


#: models whose input is at most this many pixels square are "CIFAR-like" for --crops: their
#: crops come from padded images (as their training crops did), larger ones' from images
#: loaded larger (AlexNet's and SqueezeNet's 224-pixel crops of 256-pixel images)
SMALL_INPUT_PX = 64


def _crop_plan(args: argparse.Namespace, meta: dict) -> tuple[int | None, int, int | None]:
    """(crop size, padding, image size to load at) of ``--crops``: crops at the model's input
    size; small models' images padded (``--crop-pad``, default 4), larger ones' loaded at
    256/224 of the input size; (None, 0, None) without multi-crop."""
    crops = getattr(args, "crops", 1)
    pad = getattr(args, "crop_pad", None)
    if crops == 1:
        if pad:
            raise ValueError("--crop-pad applies to --crops 10 or 144")
        return None, 0, None
    from squeezelab.inference import trained_image_size

    size = trained_image_size(meta)
    if size is None:
        raise ValueError("the model does not record its input size: --crops needs it")
    side = size if isinstance(size, int) else min(size)
    if pad is not None and pad < 0:
        raise ValueError(f"--crop-pad must be >= 0, got {pad}")
    if side <= SMALL_INPUT_PX:
        return side, 4 if pad is None else pad, None
    return side, pad or 0, round(side * 256 / 224)


def eval_data(args: argparse.Namespace, meta: dict):
    """The split ``args`` names, from ``--data`` or else the data the model was trained on
    (with ``--crops`` on a model above 64 px: loaded at 256/224 of its input size)."""
    from squeezelab.data import load_split, resolve_default_cifar10

    trained_on = (meta.get("config") or {}).get("data")
    source = args.data or trained_on or resolve_default_cifar10()
    _, _, image_size = _crop_plan(args, meta)
    return source, load_split(source, args.split, root=args.data_root, limit=args.limit,
                              download=args.download, skip_bad=args.skip_bad_images,
                              image_size=image_size)


def check_model_fits(path: str, meta: dict, source: str, data) -> None:
    """A model must predict the data's classes, in the data's order, to be scored on it."""
    num_classes = model_spec_classes(meta)
    if num_classes is not None and num_classes != data.num_classes:
        raise ValueError(f"{path} is a {num_classes}-class model, but {source} "
                         f"has {data.num_classes} classes")
    saved_names = meta.get("class_names")
    if saved_names and list(saved_names) != list(data.classes):
        raise ValueError(f"{path} was trained on classes {saved_names}, but "
                         f"{source} has {data.classes}")


def eval_flip(args: argparse.Namespace, meta: dict) -> bool:
    """--test-time-flip if given, else as the model was trained (so figures match its run's)."""
    if args.test_time_flip is not None:
        return args.test_time_flip
    return bool((meta.get("config") or {}).get("test_time_flip", False))


def eval_protocol(args: argparse.Namespace, meta: dict):
    """The one protocol a command scores with: ``--precision``, ``--test-time-flip`` and
    ``--test-time-translate`` (both defaulting to how the model of ``meta`` was trained) and
    ``--crops``."""
    from squeezelab.train.evaluate import EvalProtocol

    translate = getattr(args, "test_time_translate", None)
    crops = getattr(args, "crops", 1)
    if crops != 1 and translate is None:
        translate = 0  # crops take the place of the translations the model was trained with
    protocol = EvalProtocol.for_model(meta, flip=args.test_time_flip, precision=args.precision,
                                      translate=translate)
    if crops == 1:
        return protocol
    if args.test_time_flip is False:
        raise ValueError(f"--crops {crops} averages every crop with its mirror image: drop "
                         "--test-time-flip false")
    size, pad, _ = _crop_plan(args, meta)
    return protocol.replace(flip=True, crops=crops, crop_size=size, crop_pad=pad)


def cmd_eval(args: argparse.Namespace) -> int:
    from squeezelab.inference import load_model
    from squeezelab.train.evaluate import evaluate_data

    if args.int8 and args.precision != "fp32":
        raise ValueError(f"--int8 runs its own int8 kernels: --precision {args.precision} does "
                         "not apply (leave it at fp32)")
    average = args.weights == "average"
    model, meta = load_model(args.checkpoint, int8=args.int8, average=average)
    source, data = eval_data(args, meta)
    check_model_fits(args.checkpoint, meta, source, data)
    protocol = eval_protocol(args, meta)
    result = evaluate_data(model, data, protocol, args.batch_size)
    print(f"{args.checkpoint}{' (its weight average)' if average else ''} on {source} "
          f"[{args.split}, {result['count']} images]")
    if not average and (note := training_weights_note(args.checkpoint)):
        print(note)
    print(f"top-1 {result['top1']:.4f}   top-5 {result['top5']:.4f}   loss {result['loss']:.4f}"
          f"   ({protocol.describe()})")
    width = max(len(c) for c in data.classes)
    for name, acc in zip(data.classes, result["per_class"]):
        print(f"  {name:<{width}}  {acc:.4f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"checkpoint": args.checkpoint, "weights": args.weights, "data": str(source),
             "split": args.split, **result, "classes": data.classes}, indent=2))
    return 0


def training_weights_note(path: str) -> str | None:
    """A line for a run's ``last`` checkpoint, whose weights are the last step's while the run
    scored (and kept beside them) their moving average: the two differ by a few tenths of a
    point, in either direction, and are easy to mix up. None for any other model file."""
    from squeezelab.checkpoint import holds_separate_average, load_checkpoint, resolve_checkpoint

    if Path(path).suffix in (".sqz", ".onnx"):
        return None
    ckpt = load_checkpoint(resolve_checkpoint(path))
    if not holds_separate_average(ckpt):
        return None
    return (f"note: these are the training weights of step {ckpt.meta.get('step')}; the run "
            "scored their moving average, kept beside them: squeezelab eval --weights average "
            "scores that (as the run's best checkpoint holds it)")


def cmd_compare(args: argparse.Namespace) -> int:
    """Both models scored on the same images: only the images one gets right and the other
    wrong move the difference, so its error bar is far tighter than either accuracy's."""
    import torch

    from squeezelab.data import BatchLoader
    from squeezelab.inference import load_model
    from squeezelab.train.evaluate import (
        EvalProtocol,
        black_pixel,
        paired_difference,
        top1_correct,
    )

    models = {"A": load_model(args.baseline), "B": load_model(args.candidate)}
    paths = {"A": args.baseline, "B": args.candidate}
    source, data = eval_data(args, models["A"][1])
    for key, (_, meta) in models.items():
        check_model_fits(paths[key], meta, source, data)
    # ONE protocol for both sides: a difference between two models scored differently (one
    # flip-averaged, one not) would mostly measure the protocols, not the models
    protocol = eval_protocol(args, models["A"][1])
    if args.test_time_flip is None:
        b_flip = EvalProtocol.for_model(models["B"][1]).flip
        if b_flip != protocol.flip:
            print(f"note: B was trained {'with' if b_flip else 'without'} test-time flip, A "
                  f"{'with' if protocol.flip else 'without'}; both are scored as A "
                  f"({protocol.describe()}); --test-time-flip chooses")
    loader = BatchLoader(data, args.batch_size, train=False, augment=None)
    hits = {}
    for key, (model, _) in models.items():
        loader.set_epoch(0)
        hits[key] = top1_correct(model, loader, torch.device("cpu"), protocol=protocol,
                                 pad_value=black_pixel(data.mean, data.std))
    top1 = {key: hit.double().mean().item() for key, hit in hits.items()}
    paired = paired_difference(hits["B"], hits["A"])
    diff, se = paired["difference"], paired["image_se"]
    low, high = diff - 1.96 * se, diff + 1.96 * se
    print(f"on {source} [{args.split}, {len(data)} images], both scored {protocol.describe()}")
    for key in ("A", "B"):
        print(f"  {key}  top-1 {top1[key]:.4f} ({protocol.describe()})  {paths[key]}")
        if note := training_weights_note(paths[key]):
            print(f"     {note}")
    print(f"B - A  {100 * diff:+.2f} points, 95% interval {100 * low:+.2f} to {100 * high:+.2f}"
          f"  (only B right on {paired['gained'][0]} images, only A on {paired['lost'][0]}; "
          f"both {protocol.describe()})")
    if paired["gained"][0] + paired["lost"][0] == 0:
        verdict = "the two models are right on exactly the same images"
    elif low > 0 or high < 0:
        verdict = f"{'B' if diff > 0 else 'A'} is better on these images beyond sampling luck"
    else:
        verdict = "no difference beyond the luck of which images were drawn"
    print(verdict)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"baseline": args.baseline, "candidate": args.candidate, "data": str(source),
             "split": args.split, "images": len(data), "protocol": protocol.to_dict(),
             "baseline_top1": top1["A"], "candidate_top1": top1["B"],
             "candidate_minus_baseline": diff, "image_se": se, "interval_95": [low, high],
             "only_candidate_correct": paired["gained"][0],
             "only_baseline_correct": paired["lost"][0]}, indent=2))
    return 0


def model_spec_classes(meta: dict) -> int | None:
    spec = meta.get("model") or {}
    return (spec.get("kwargs") or {}).get("num_classes")


def predict_preprocess(args: argparse.Namespace, meta: dict):
    """The model file's own preprocessing record; for files written before it was kept, the
    mean/std of the train split of ``--data`` or of the data the model was trained on."""
    from squeezelab.data import load_split, resolve_default_cifar10
    from squeezelab.data.preprocess import Preprocess
    from squeezelab.inference import preprocess_of, trained_image_size

    pre = preprocess_of(meta)
    if pre is not None:
        return pre
    config = meta.get("config")
    if args.data is None and config is None:
        raise ValueError(f"{args.model} does not record how its inputs were normalised (it "
                         "predates the preprocessing record) nor the data it was trained on; "
                         "pass --data SOURCE, the data it was trained on")
    # a run's config names its data, or None for the default CIFAR-10, as training read it
    source = args.data or config.get("data") or resolve_default_cifar10()
    print(f"{args.model} does not record its input normalisation; taking it from the train "
          f"split of {source}", flush=True)
    size = trained_image_size(meta)
    train = load_split(source, "train", root=args.data_root, image_size=size,
                       download=args.download)
    return Preprocess(size or train.image_size, train.mean, train.std)


def cmd_predict(args: argparse.Namespace) -> int:
    from squeezelab.data.preprocess import image_files
    from squeezelab.inference import load_model, predict

    files = image_files(args.images)  # before loading anything: a typo fails fast
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    model, meta = load_model(args.model)
    pre = predict_preprocess(args, meta)
    images, files_read = pre.load_images(files, skip_bad=args.skip_bad_images,
                                         progress=len(files) > 1000)
    for path in sorted(set(files) - set(files_read)):
        print(f"skipped {path}: not a readable image")
    files = files_read
    flip = eval_flip(args, meta)
    rows = predict(model, images, args.top_k, test_time_flip=flip).labels(
        meta.get("class_names"))
    height, width = pre.image_size
    print(f"{args.model} on {len(files)} image{'s' if len(files) != 1 else ''} (resized to "
          f"{width}x{height}, normalised as in training{', flip-averaged' if flip else ''})")
    name_width = min(max(len(f) for f in files), 48)
    for path, top in zip(files, rows):
        classes = "   ".join(f"{name} {100 * p:5.1f}%" for name, p in top)
        print(f"  {path:<{name_width}}  {classes}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"model": args.model, "preprocess": pre.to_meta(), "test_time_flip": flip,
             "predictions": [{"image": path, "top": [{"class": n, "probability": p}
                                                     for n, p in top]}
                             for path, top in zip(files, rows)]}, indent=2))
    return 0
