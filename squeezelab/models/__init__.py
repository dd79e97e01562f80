"""Model zoo: the registry plus one module per family (importing them registers the builders)."""
from squeezelab.models import (  # noqa: F401  (importing them registers the builders)
    alexnet,
    convgroups,
    firegroups,
    googlenet,
    mobilenet,
    resnet,
    squeezenet,
)
from squeezelab.models.registry import (
    ModelArgumentError,
    UnknownModelArgumentError,
    UnknownModelError,
    create_model,
    get_entry,
    list_models,
    model_spec,
    register_model,
    skeleton,
    unwrap_model,
)
from squeezelab.models.skeletons import create_skeleton

__all__ = [
    "ModelArgumentError", "UnknownModelArgumentError", "UnknownModelError", "create_model",
    "create_skeleton", "get_entry", "list_models", "model_spec", "register_model", "skeleton",
    "unwrap_model",
]
