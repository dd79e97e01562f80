"""SqueezeNet sizes the tests share, as ``create_model("squeezenet_cifar", **X)`` arguments.

TINY trains a step in milliseconds (DSD, folding, benchmark scripts); SMALL still learns real
CIFAR-10 images above chance in a few epochs (the training loop, distillation, DDP).
"""
TINY = {"fire_config": [[4, 8, 8], [4, 8, 8], [8, 16, 16], [8, 16, 16],
                        [8, 16, 16], [8, 16, 16], [8, 24, 24], [8, 24, 24]],
        "stem_channels": 16}

#: TrainConfig fields of a quiet fp32 NCHW fine-tuning run at batch 50 (no autotune)
QUIET_FP32 = {"batch_size": 50, "optimizer": "adamw", "precision": "fp32", "channels_last": False,
              "progress": False}

SMALL = {"fire_config": [[8, 16, 16], [8, 16, 16], [16, 32, 32], [16, 32, 32],
                         [16, 48, 48], [16, 48, 48], [16, 64, 64], [16, 64, 64]],
         "stem_channels": 32}


def small_run(tmp_path, **changes):
    """A TrainConfig of SMALL on CPU in fp32, 2 epochs of batch 50, AdamW, quiet, into
    ``tmp_path/run``; ``changes`` override any field."""
    from squeezelab.train import TrainConfig

    base = dict(model="squeezenet_cifar", model_args=SMALL, epochs=2, batch_size=50,
                optimizer="adamw", lr=0.005, weight_decay=0.01, precision="fp32",
                channels_last=False, out_dir=str(tmp_path), run_name="run", progress=False)
    return TrainConfig(**{**base, **changes})
