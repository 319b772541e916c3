"""The LLaDA-VLA model: SigLIP vision tower + mlp2x_gelu projector + LLaDA diffusion backbone.

Names are imported lazily, so ``python -m llada_vla_ros.model.info`` needs neither torch
nor transformers.
"""
import importlib

_EXPORTS = {
    "LladaVlaConfig": ".configuration",
    "KVCache": ".modeling", "LladaVlaForActions": ".modeling", "Observation": ".modeling",
    "PrefixCache": ".modeling", "from_pretrained": ".modeling",
    "LoadReport": ".checkpoint", "UnsafeCheckpointError": ".files",
    "load_language_model_weights": ".checkpoint",
    "ImageInput": ".processing", "build_prompt_ids": ".processing",
    "build_tiny_tokenizer": ".processing", "preprocess_image": ".processing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
