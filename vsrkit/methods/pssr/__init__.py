"""PS-SR: speculative base/draft sampling with a frequency-domain update on Wan2.1-T2V-1.3B."""

from vsrkit.methods.pssr.config import PSSRConfig

__all__ = ["PSSRConfig"]
