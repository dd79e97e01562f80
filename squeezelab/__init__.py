"""squeezelab: SqueezeNet-family CNNs, trained fast and compressed into small files that load back."""
from squeezelab.models import create_model, list_models, model_spec, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_spec", "register_model", "__version__"]
