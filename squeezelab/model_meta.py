"""What a model file's meta says about its inputs: the image size it was trained at and how
its images were prepared. Read by ``inference`` (to run a model) and ``export`` (to write it
into an ONNX file's metadata), so it sits below both.
"""
from __future__ import annotations

from typing import Any

from squeezelab.data.preprocess import Preprocess


def trained_image_size(meta: dict[str, Any]) -> tuple[int, int] | int | None:
    """The (height, width) the model was trained at: the recorded size, else (older files) the
    size the run's config resized to, else the registered model's native input size."""
    from squeezelab.models.registry import get_entry

    size = meta.get("image_size") or (meta.get("config") or {}).get("image_size")
    if size is not None:
        return tuple(size) if isinstance(size, list) else size
    name = (meta.get("model") or {}).get("name")
    return get_entry(name).default_input_size if name else None


def preprocess_of(meta: dict[str, Any]) -> Preprocess | None:
    """The model file's preprocessing record; ``None`` for files written before mean/std were
    kept (the caller must then take them from the training data)."""
    return Preprocess.from_meta(meta, trained_image_size(meta))


__all__ = ["preprocess_of", "trained_image_size"]
