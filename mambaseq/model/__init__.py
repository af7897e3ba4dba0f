"""The Mamba model: mixer (mixer.py) and backbone with heads and inference cache (backbone.py)."""
from mambaseq.model.backbone import Block, InferenceCache, MambaModel, RMSNorm
from mambaseq.model.mixer import MambaMixer, SelectiveSSM, causal_conv

__all__ = ["MambaModel", "InferenceCache", "Block", "RMSNorm", "MambaMixer", "SelectiveSSM", "causal_conv"]
