"""The typed training config: a dataclass validated on construction, loaded from YAML recipes
with unknown keys rejected, overridable by CLI flags, and saved next to every run.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeezelab.config import ConfigBase, ConfigError, read_yaml_mapping
from squeezelab.data.loader import CIFAR_PADDING_PX
from squeezelab.data.mixing import MIX_MODES

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "pgd")
SCHEDULES = ("constant", "step", "cosine", "linear", "cosine_restarts")
PRECISIONS = ("auto", "fp32", "bf16")
AUGMENTS = ("auto", "cifar", "imagenet", "none")
# what one group-lasso group is: a filter, an input-channel slice, or both (regularizers.py)
GROUP_LASSO_GROUPS = ("out_channels", "in_channels", "both")
# what the binarisation regulariser measures weights against (regularizers.py): each filter's
# largest |w| ("filter"), or the raw values ("none": for weights clipped to [-1, 1])
BINARIZE_SCALES = ("filter", "none")

#: The fields a model's registered ``train_defaults`` may fill (``register_model``): a run
#: that leaves one unset (None) takes the model's value, else the built-in one below. So the
#: order of precedence is: a flag, then the recipe, then the model's default, then the
#: built-in default.
MODEL_DEFAULT_FIELDS = ("optimizer", "lr", "momentum", "weight_decay", "schedule",
                        "warmup_epochs", "label_smoothing")
#: Fields whose good value depends on the optimizer: a model's default for them is used only
#: when the run uses the model's default optimizer (AdamW's decoupled weight decay 0.05 would
#: be a 100x too strong L2 penalty under SGD, and its lr 0.005 far too low for SGD).
OPTIMIZER_TIED_FIELDS = ("lr", "momentum", "weight_decay")
#: What an unset field is when the model registers no default for it.
BUILT_IN_DEFAULTS: dict[str, Any] = {
    "optimizer": "nesterov", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
    "schedule": "cosine", "warmup_epochs": 0.0, "label_smoothing": 0.0,
}
#: Fields a resumed run may not change: they decide which images are trained on or scored
#: and how (so a new best score would not be comparable with the saved one), or which model
#: is trained. ``seed`` and ``subset_seed`` count through ``data_seed`` (the subset's seed).
RUN_IDENTITY_FIELDS = ("model", "model_args", "data", "image_size", "limit_train",
                       "limit_test", "data_seed", "test_time_flip", "test_time_translate",
                       "precision")


#: how a run's stem starts: "default" (the model's own initialisation) or "whitening"
STEM_INITS = ("default", "whitening")


@dataclass
class TrainConfig(ConfigBase):
    """Everything a training run depends on. Units are in the names (epochs, lr, seconds)."""

    # model
    model: str = "squeezenet_cifar"
    model_args: dict[str, Any] = field(default_factory=dict)
    # start from these weights (fine-tuning): a checkpoint, run directory, .safetensors or a
    # .pth state dict; tensors whose shape differs (another class count) keep their init
    init_from: str | None = None
    # data: "cifar10", "cifar100" (official archives) or a class-folder root; None = the
    # CIFAR-10 copy in ../shared/data when present, else the official download
    data: str | None = None
    data_root: str | None = None  # where official archives live / are downloaded to
    download: bool = False
    image_size: int | None = None
    limit_train: int | None = None  # balanced train subset (N // classes per class)
    limit_test: int | None = None
    skip_bad_images: bool = False
    augment: str = "auto"
    cutout: int = 0  # side of the square Cutout zeroes in each training image (0: none)
    # "cifar" augment: black pixels around each image before its crop
    crop_padding: int = CIFAR_PADDING_PX
    # mixing whole batches (data/mixing.py): "mixup" or "cutmix", lam ~ Beta(alpha, alpha),
    # each batch with probability mix_prob, none in the last mix_off_epochs; None: off
    mix: str | None = None
    mix_alpha: float = 1.0
    mix_prob: float = 1.0
    mix_off_epochs: int = 0
    # the first minutes (train/fast_start.py): train on batches resized to each of
    # progressive_sizes for an equal share of the epochs (None: the images' size); start the
    # stem as the PCA whitening of the training patches (stem_init: whitening)
    progressive_sizes: list[int] | None = None
    stem_init: str = "default"
    whitening_eps: float = 5e-4
    # optimisation
    epochs: int = 10
    # seconds the run may take, training and scoring: after its first epoch it keeps as many
    # of ``epochs`` as this machine fits (train/time_budget.py); None: all of them
    time_budget: float | None = None
    batch_size: int = 128
    # optimizer .. warmup_epochs and label_smoothing: None (unset) takes the model's registered
    # train_defaults, else BUILT_IN_DEFAULTS; resolved on construction (see MODEL_DEFAULT_FIELDS)
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    # where the warm-up starts and where linear / cosine decay ends, as shares of the peak
    # rate (airbench94's triangle: 0.2 and 0.07); 0 and 0: from zero to zero
    warmup_start_factor: float = 0.0
    final_lr_factor: float = 0.0
    step_epochs: int = 30  # "step": decay every step_epochs by gamma
    gamma: float = 0.1
    restart_epochs: int = 10  # "cosine_restarts": first cycle length (SGDR T_0)
    restart_mult: int = 1  # SGDR T_mult
    label_smoothing: float | None = None
    grad_clip: float | None = None  # max global L2 norm of gradients; None = off
    # perturbed gradient descent (Jin et al. 2017): noise radius and gradient-norm threshold
    pgd_radius: float = 1e-3
    pgd_threshold: float = 1e-3
    pgd_interval: int = 10  # steps without noise after a perturbation (the paper's t_thres)
    # sparsity regularisers added to the loss (train/regularizers.py): L1 on weights (Han et
    # al. 2015) and group lasso over whole channels (Wen et al. 2016), whose dead channels
    # ``squeezelab prune --channels dead`` then cuts out; 0 = off
    l1_weight: float = 0.0
    group_lasso_weight: float = 0.0
    group_lasso_groups: str = "out_channels"
    bn_l1_weight: float = 0.0  # L1 on BatchNorm scales (Network Slimming, Liu et al. 2017)
    # toward binary weights: sum u^2 (1 - u^2), u = w over its filter's largest |w| (or w
    # itself), zero at u in {-1, 0, 1}; 0 = off
    binarize_weight: float = 0.0
    binarize_scale: str = "filter"
    # an exponential moving average of the weights, scored and kept (train/weight_average.py);
    # 0 = off
    ema_decay: float = 0.0
    # Lookahead (train/lookahead.py): every lookahead_steps optimizer steps the slow weights
    # move lookahead_alpha of the way to the fast ones, which restart there; 0 = off
    lookahead_steps: int = 0
    lookahead_alpha: float = 0.5
    # the pull grows over the run (airbench94): at step s of S the slow weights move
    # 1 - (1 - lookahead_alpha) * (s / S)^3 of the way, so early syncs barely hold the weights
    # back and the last ones move lookahead_alpha
    lookahead_ramp: bool = False
    # per-layer settings (train/layer_settings.py, airbench94's): the BatchNorms' running-
    # statistics momentum (None: PyTorch's 0.1), their scales fixed at 1, the stem's weights
    # fixed, their shifts at norm_lr_scale times the learning rate
    bn_momentum: float | None = None
    freeze_bn_scale: bool = False
    freeze_stem: bool = False
    norm_lr_scale: float = 1.0
    # speed
    # "auto" and None are settled by timing a few steps of each candidate (train/autotune.py)
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    device: str = "auto"
    # bookkeeping
    seed: int = 0
    # The seed that picks the limit_train / limit_test subset; None: ``seed``. Set apart from
    # ``seed`` so several seeds can train on one subset and the run's config still says which.
    subset_seed: int | None = None
    out_dir: str = "runs"
    run_name: str | None = None
    eval_every: int = 1  # epochs between test-set evaluations (the last epoch always)
    test_time_flip: bool = False  # average logits with the flipped image at evaluation
    test_time_translate: int = 0  # and with copies shifted this many pixels (0: off)
    log_every: int = 20  # steps between progress-bar updates (each one syncs with the device)
    progress: bool = True

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        self._resolve_unset_fields()

        check(self.optimizer in OPTIMIZERS,
              f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check(self.schedule in SCHEDULES,
              f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check(self.precision in PRECISIONS,
              f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        check(self.augment in AUGMENTS, f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        check(isinstance(self.cutout, int) and not isinstance(self.cutout, bool)
              and self.cutout >= 0,
              f"cutout must be a non-negative integer (pixels), got {self.cutout!r}")
        check(isinstance(self.crop_padding, int) and not isinstance(self.crop_padding, bool)
              and self.crop_padding >= 0,
              f"crop_padding must be a non-negative integer (pixels), got "
              f"{self.crop_padding!r}")
        check(self.mix is None or self.mix in MIX_MODES,
              f"mix must be one of {MIX_MODES} or null (off), got {self.mix!r}")
        check(self.mix_alpha > 0, f"mix_alpha must be > 0, got {self.mix_alpha}")
        check(0 < self.mix_prob <= 1, f"mix_prob must be in (0, 1], got {self.mix_prob}")
        check(isinstance(self.mix_off_epochs, int) and not isinstance(self.mix_off_epochs, bool)
              and 0 <= self.mix_off_epochs <= self.epochs,
              f"mix_off_epochs must be an integer in [0, epochs={self.epochs}], got "
              f"{self.mix_off_epochs!r}")
        check(isinstance(self.epochs, int) and self.epochs >= 1,
              f"epochs must be a positive integer, got {self.epochs!r}")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1,
              f"batch_size must be a positive integer, got {self.batch_size!r}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(0 <= self.label_smoothing < 1,
              f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        check(0 <= self.warmup_epochs <= self.epochs,
              f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        check(0 <= self.warmup_start_factor < 1,
              f"warmup_start_factor must be in [0, 1), got {self.warmup_start_factor}")
        check(0 <= self.final_lr_factor < 1,
              f"final_lr_factor must be in [0, 1), got {self.final_lr_factor}")
        check(self.limit_train is None or self.limit_train >= 1,
              f"limit_train must be a positive integer, got {self.limit_train}")
        check(self.limit_test is None or self.limit_test >= 1,
              f"limit_test must be a positive integer, got {self.limit_test}")
        check(self.subset_seed is None
              or (isinstance(self.subset_seed, int) and not isinstance(self.subset_seed, bool)),
              f"subset_seed must be an integer or null, got {self.subset_seed!r}")
        check(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        check(self.time_budget is None or (not isinstance(self.time_budget, bool)
                                           and isinstance(self.time_budget, (int, float))
                                           and self.time_budget > 0),
              f"time_budget must be a number of seconds > 0 or null, got {self.time_budget!r}")
        check(0 <= self.test_time_translate <= 4, f"test_time_translate must be a number of "
              f"pixels in [0, 4], got {self.test_time_translate}")
        check(self.l1_weight >= 0, f"l1_weight must be >= 0, got {self.l1_weight}")
        check(self.bn_l1_weight >= 0, f"bn_l1_weight must be >= 0, got {self.bn_l1_weight}")
        check(self.binarize_weight >= 0,
              f"binarize_weight must be >= 0, got {self.binarize_weight}")
        check(self.ema_decay == 0 or 0 < self.ema_decay < 1,
              f"ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}")
        sizes = self.progressive_sizes
        check(sizes is None or (isinstance(sizes, list) and sizes and all(
            isinstance(x, int) and not isinstance(x, bool) and 8 <= x <= 1024 for x in sizes)),
            f"progressive_sizes must be null or a non-empty list of image sizes (integers in "
            f"[8, 1024]), got {sizes!r}")
        check(self.stem_init in STEM_INITS,
              f"stem_init must be one of {STEM_INITS}, got {self.stem_init!r}")
        check(self.whitening_eps > 0, f"whitening_eps must be > 0, got {self.whitening_eps}")
        check(self.lookahead_steps >= 0,
              f"lookahead_steps must be >= 0 (0: off), got {self.lookahead_steps}")
        check(0 < self.lookahead_alpha <= 1,
              f"lookahead_alpha must be in (0, 1], got {self.lookahead_alpha}")
        check(self.bn_momentum is None or 0 < self.bn_momentum <= 1,
              f"bn_momentum must be in (0, 1] (PyTorch's convention: the new batch's weight) "
              f"or null, got {self.bn_momentum}")
        check(self.norm_lr_scale > 0, f"norm_lr_scale must be > 0, got {self.norm_lr_scale}")
        check(self.binarize_scale in BINARIZE_SCALES,
              f"binarize_scale must be one of {BINARIZE_SCALES}, got {self.binarize_scale!r}")
        check(self.group_lasso_weight >= 0,
              f"group_lasso_weight must be >= 0, got {self.group_lasso_weight}")
        check(self.group_lasso_groups in GROUP_LASSO_GROUPS,
              f"group_lasso_groups must be one of {GROUP_LASSO_GROUPS}, got "
              f"{self.group_lasso_groups!r}")
        check(isinstance(self.model_args, dict),
              f"model_args must be a mapping, got {type(self.model_args).__name__}")

    def _resolve_unset_fields(self) -> None:
        """Fill the fields left None from the model's ``train_defaults``, else the built-in
        defaults, and remember which came from the model (``defaults_from_model``)."""
        from squeezelab.models import UnknownModelError, get_entry

        try:
            model_defaults = dict(get_entry(self.model).train_defaults)
        except UnknownModelError:  # an unknown name fails when the model is built, naming it
            model_defaults = {}
        unknown = sorted(set(model_defaults) - set(MODEL_DEFAULT_FIELDS))
        if unknown:
            raise ConfigError(f"model {self.model!r} registers train_defaults {unknown}; a "
                              f"model may set only {', '.join(MODEL_DEFAULT_FIELDS)}")
        optimizer = self.optimizer or model_defaults.get("optimizer",
                                                         BUILT_IN_DEFAULTS["optimizer"])
        same_optimizer = optimizer == model_defaults.get("optimizer", optimizer)
        taken = []
        for name in MODEL_DEFAULT_FIELDS:
            if getattr(self, name) is not None:
                continue
            if name in model_defaults and (same_optimizer or name not in OPTIMIZER_TIED_FIELDS):
                setattr(self, name, model_defaults[name])
                taken.append(name)
            else:
                setattr(self, name, BUILT_IN_DEFAULTS[name])
        # not a dataclass field: to_dict, equality and the saved config do not see it
        self._defaults_from_model = tuple(taken)

    @property
    def defaults_from_model(self) -> dict[str, Any]:
        """The fields this config took from its model's registered ``train_defaults`` (the
        ones it was not given), with their values."""
        return {name: getattr(self, name) for name in getattr(self, "_defaults_from_model", ())}

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; the fields that came from the model's defaults and are not
        changed are still marked as such. (The copy keeps this config's settings: changing
        ``model`` does not bring the new model's defaults.)"""
        new = super().replace(**changes)
        new._defaults_from_model = tuple(
            n for n in getattr(self, "_defaults_from_model", ()) if n not in changes)
        return new

    @property
    def data_seed(self) -> int:
        """The seed that chooses the limit_train / limit_test subset."""
        return data_seed_of({"seed": self.seed, "subset_seed": self.subset_seed})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None,
                  *, section: str | None = None) -> TrainConfig:
        """Load a recipe; ``overrides`` (e.g. from CLI flags) win over the file's values.
        The method sections other commands read (``dsd:``, ``compress:`` ...) are skipped."""
        values = read_yaml_mapping(path)
        values = {k: v for k, v in values.items() if k not in RECIPE_SECTIONS}
        return cls.from_dict({**values, **(overrides or {})}, source=str(path))


def data_seed_of(config: dict[str, Any]) -> int:
    """The seed that chose a run's limit_train / limit_test subset, from its saved config (a
    checkpoint's or config.yaml's; those written before subset_seed existed used ``seed``)."""
    subset_seed = config.get("subset_seed")
    return config.get("seed", 0) if subset_seed is None else subset_seed


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: a config read back from YAML holds lists."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def resume_conflicts(saved: Mapping[str, Any], cfg: TrainConfig) -> list[tuple[str, Any, Any]]:
    """The ``RUN_IDENTITY_FIELDS`` in which ``cfg`` differs from a run's ``saved`` config (its
    checkpoint's ``meta["config"]``), as (name, saved value, new value); ``data_seed`` is
    named ``seed/subset_seed``. A run written before a field existed is not held to it."""
    out = []
    for name in RUN_IDENTITY_FIELDS:
        if name == "data_seed":
            if "seed" in saved and data_seed_of(dict(saved)) != cfg.data_seed:
                out.append(("seed/subset_seed", data_seed_of(dict(saved)), cfg.data_seed))
        elif name in saved and _plain(saved[name]) != _plain(getattr(cfg, name)):
            out.append((name, saved[name], getattr(cfg, name)))
    return out


_UNSET_HELP = "the model's own default (printed before training), else "
_UNSET_TIED_HELP = "the model's own default when the run uses its optimizer, else "

#: One line per TrainConfig field, shown by ``squeezelab train --help`` (and every command that
#: takes the training flags). A field that may be left unset (None) says what happens then.
FIELD_HELP: dict[str, str] = {
    "model": "registered model name (squeezelab models lists them)",
    "model_args": "model constructor arguments (--model-arg KEY=VALUE)",
    "init_from": "fine-tune: start from the weights in this checkpoint, run directory, "
                 ".safetensors or .pth state dict (torchvision's too); layers whose shape "
                 "differs, such as a classifier for another class count, start fresh; "
                 "unset: the model's random initialisation",
    "data": "cifar10, cifar100 or a class-folder root; unset: ../shared/data's CIFAR-10 copy "
            "when present, else the official archive",
    "data_root": "where the official CIFAR archives live or are downloaded to; unset: the "
                 "decode cache ($SQUEEZELAB_CACHE or ~/.cache/squeezelab)",
    "download": "fetch the official CIFAR archive when it is missing",
    "image_size": "resize images to this side (or HxW); unset: native size",
    "limit_train": "train on a balanced subset of N images (N // classes per class); unset: "
                   "the whole split",
    "limit_test": "evaluate on a balanced subset of N test images; unset: the whole split",
    "skip_bad_images": "leave out unreadable image files instead of failing",
    "augment": f"training augmentation: one of {', '.join(AUGMENTS)} (auto: cifar at 64 px "
               f"and below, else imagenet)",
    "cutout": "Cutout (DeVries & Taylor 2017): zero a random square of this many pixels a side "
              "in every training image, after the crop and flip (16 for CIFAR-10 in the "
              "paper); 0: none",
    "crop_padding": "CIFAR augmentation: pad each training image by this many black pixels "
                    "and crop it back at random (4: the standard; airbench's 2 for short "
                    "runs)",
    "mix": f"mix training batches: one of {', '.join(MIX_MODES)} (mixup: blend each image "
           "with another of its batch; cutmix: paste a box of another into it; the targets "
           "blended alike); unset: off",
    "mix_alpha": "--mix: each batch's weight is drawn from Beta(alpha, alpha) (1 for CutMix, "
                 "0.2-1 for mixup in their papers)",
    "mix_prob": "--mix: the share of batches mixed (the rest train as they are)",
    "mix_off_epochs": "--mix: train the last this-many epochs on unmixed batches",
    "progressive_sizes": "train on batches resized to each of these sizes in turn, for equal "
                         "shares of the epochs, e.g. [24, 32] (the test set keeps its size); "
                         "unset: the images' own size throughout",
    "stem_init": "default, or whitening: the first conv starts as the PCA whitening of the "
                 "training images' patches (and its negation)",
    "whitening_eps": "added to each eigenvalue before the whitening divides by its root",
    "epochs": "passes over the training set",
    "time_budget": "seconds the run may take (training and scoring, not data loading): "
                   "after the first epoch it keeps as many of --epochs as fit on this "
                   "machine, the schedule laid over those; unset: every epoch",
    "batch_size": "images per step (the global batch under DDP)",
    "optimizer": f"one of {', '.join(OPTIMIZERS)}; unset: {_UNSET_HELP}"
                 f"{BUILT_IN_DEFAULTS['optimizer']}",
    "lr": f"peak learning rate; unset: {_UNSET_TIED_HELP}{BUILT_IN_DEFAULTS['lr']}",
    "momentum": "momentum of the momentum, nesterov and rmsprop optimizers; unset: "
                f"{_UNSET_TIED_HELP}{BUILT_IN_DEFAULTS['momentum']}",
    "weight_decay": "weight decay (decoupled from the gradient for adamw); unset: "
                    f"{_UNSET_TIED_HELP}{BUILT_IN_DEFAULTS['weight_decay']}",
    "schedule": f"learning-rate schedule: one of {', '.join(SCHEDULES)}; unset: "
                f"{_UNSET_HELP}{BUILT_IN_DEFAULTS['schedule']}",
    "warmup_epochs": "linear warm-up, in epochs (fractions allowed); unset: "
                     f"{_UNSET_HELP}{BUILT_IN_DEFAULTS['warmup_epochs']}",
    "warmup_start_factor": "the warm-up starts at this share of the peak rate (airbench: "
                           "0.2); 0: from zero",
    "final_lr_factor": "schedules linear and cosine end at this share of the peak rate "
                       "(airbench: 0.07); 0: at zero",
    "step_epochs": "schedule step: decay the rate every this many epochs",
    "gamma": "schedule step: the decay factor",
    "restart_epochs": "schedule cosine_restarts: first cycle length in epochs (SGDR T_0)",
    "restart_mult": "schedule cosine_restarts: cycle length multiplier (SGDR T_mult)",
    "label_smoothing": "cross-entropy label smoothing in [0, 1); unset: "
                       f"{_UNSET_HELP}{BUILT_IN_DEFAULTS['label_smoothing']}",
    "grad_clip": "clip the global gradient L2 norm to this; unset: no clipping",
    "pgd_radius": "optimizer pgd: radius of the noise added near saddle points",
    "pgd_threshold": "optimizer pgd: gradient norm below which noise is added",
    "pgd_interval": "optimizer pgd: steps without noise after a perturbation",
    "l1_weight": "add this times the sum of |w| over conv/linear weights to the loss",
    "group_lasso_weight": "add this times the group-lasso penalty (L2 norm per channel) to "
                          "the loss: drives whole channels to zero for prune --channels dead",
    "group_lasso_groups": f"group-lasso groups: one of {', '.join(GROUP_LASSO_GROUPS)}",
    "bn_l1_weight": "add this times the sum of |BatchNorm scale| to the loss (Network "
                    "Slimming): silences whole channels behind BatchNorm for prune --channels",
    "binarize_weight": "add this times sum u^2 (1 - u^2) over conv/linear weights but the "
                       "first and last to the loss, u = w / its filter's largest |w| "
                       "(--binarize-scale): pushes weights to 0 or +-max, so binarizing "
                       "them (quantize --method xnor) loses less",
    "binarize_scale": f"binarisation regulariser's u: one of {', '.join(BINARIZE_SCALES)} "
                      "(filter: w / the filter's largest |w|; none: w itself, for weights "
                      "clipped to [-1, 1])",
    "ema_decay": "keep an exponential moving average of the weights with this decay (e.g. "
                 "0.99): the test set is scored with it, best.* and the final model hold it; "
                 "0 = off",
    "lookahead_steps": "Lookahead: every this many steps move the slow weights toward the "
                       "fast ones by --lookahead-alpha and restart the fast ones there; 0 = off",
    "lookahead_alpha": "the share of the way the slow weights move at each Lookahead sync "
                       "(with --lookahead-ramp: at the run's last sync)",
    "lookahead_ramp": "grow Lookahead's pull over the run (airbench): the share moved falls "
                      "from 1 at the start to --lookahead-alpha at the end, cubically",
    "bn_momentum": "every BatchNorm's running-statistics momentum, PyTorch's convention (the "
                   "new batch's weight; airbench's 0.6 is 0.4 here); unset: 0.1",
    "freeze_bn_scale": "keep every BatchNorm's scale at 1 (airbench)",
    "freeze_stem": "keep the first convolution's weights as initialised, e.g. the whitening "
                   "filters of --stem-init whitening; its bias still trains",
    "norm_lr_scale": "train the BatchNorm shifts at this many times the learning rate, their "
                     "weight decay per step unchanged (airbench's bias scaler, 64); 1 = off",
    "precision": f"one of {', '.join(PRECISIONS)} (auto: time a few steps of each)",
    "channels_last": "NHWC memory layout; unset: time a few steps of each",
    "compile": "torch.compile the model",
    "device": "auto, cpu, cuda or cuda:N",
    "seed": "seed of initial weights, batch order and augmentation",
    "subset_seed": "seed that picks the --limit-train/--limit-test subset; unset: --seed",
    "out_dir": "folder that holds the run directories",
    "run_name": "run directory name under --out-dir; unset: the model name and a time stamp",
    "eval_every": "epochs between test-set evaluations (the last epoch always)",
    "test_time_flip": "average each test image's logits with its mirror image",
    "test_time_translate": "also average each test image's logits (1/2) with those of its "
                           "copies shifted this many pixels down-right and up-left (1/4 "
                           "each); 0: off",
    "log_every": "steps between progress-bar updates",
    "progress": "show progress bars and a line per epoch (false: quiet; metrics.jsonl is "
                "written either way)",
}

# Top-level recipe sections that configure methods rather than the base run.
RECIPE_SECTIONS = ("dsd", "distill", "prune", "compress", "fitnets")


def load_recipe_sections(path: str | Path) -> dict[str, Any]:
    """The method sections (dsd, distill, ...) of a recipe, for commands that use them."""
    return {k: v for k, v in read_yaml_mapping(path).items() if k in RECIPE_SECTIONS}


__all__ = ["BINARIZE_SCALES", "BUILT_IN_DEFAULTS", "ConfigError", "FIELD_HELP",
           "MODEL_DEFAULT_FIELDS", "RECIPE_SECTIONS", "RUN_IDENTITY_FIELDS", "TrainConfig",
           "data_seed_of", "load_recipe_sections", "resume_conflicts"]
