"""squeezelab: SqueezeNet-family CNNs, trained fast, compressed into small files that load back."""
from squeezelab.models import create_model, list_models, model_spec, register_model

__version__ = "0.1.0"

# Imported on first use (PEP 562), so ``import squeezelab`` stays fast.
_LAZY = {
    "save_compressed": "squeezelab.compress.format.sqz",
    "load_compressed": "squeezelab.compress.format.sqz",
    "export_onnx": "squeezelab.export",
    "load_model": "squeezelab.inference",
    "predict": "squeezelab.inference",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'squeezelab' has no attribute {name!r}")


__all__ = ["create_model", "list_models", "model_spec", "register_model", "save_compressed",
           "load_compressed", "export_onnx", "load_model", "predict", "__version__"]
