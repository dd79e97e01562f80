"""SqueezeNet sizes the tests share, as ``create_model("squeezenet_cifar", **X)`` arguments.

TINY trains a step in milliseconds (DSD, folding, benchmark scripts); SMALL still learns real
CIFAR-10 images above chance in a few epochs (the training loop, distillation, DDP).
"""
TINY = {"fire_config": [[4, 8, 8], [4, 8, 8], [8, 16, 16], [8, 16, 16],
                        [8, 16, 16], [8, 16, 16], [8, 24, 24], [8, 24, 24]],
        "stem_channels": 16}

SMALL = {"fire_config": [[8, 16, 16], [8, 16, 16], [16, 32, 32], [16, 32, 32],
                         [16, 48, 48], [16, 48, 48], [16, 64, 64], [16, 64, 64]],
         "stem_channels": 32}
