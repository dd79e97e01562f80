"""Random images as a split, for the tests whose point is bookkeeping (a hook's counter, a
penalty's trend) rather than learning: a few steps on noise exercise them fully."""
import torch

from squeezelab.data.types import ImageTensors


def noise_split(num_images: int, side: int = 8, num_classes: int = 2,
                seed: int = 0) -> ImageTensors:
    """uint8 noise images of side x side pixels, labels cycling through the classes."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, 3, side, side), dtype=torch.uint8, generator=g)
    return ImageTensors(images=images, labels=torch.arange(num_images) % num_classes,
                        classes=[f"c{i}" for i in range(num_classes)], source="noise",
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def noise_run_config(tmp_path, run_name: str, **overrides):
    """A TrainConfig for a few fast fp32 steps of a tiny SqueezeNet on ``noise_split`` data,
    writing its run under ``tmp_path``; ``overrides`` set what the test is about."""
    from squeezelab.train import TrainConfig

    values = dict(model="squeezenet_cifar", epochs=1, batch_size=8, precision="fp32",
                  channels_last=False, out_dir=str(tmp_path), run_name=run_name,
                  progress=False, model_args={"fire_config": [[4, 8, 8]] * 8,
                                              "stem_channels": 8})
    return TrainConfig(**{**values, **overrides})
