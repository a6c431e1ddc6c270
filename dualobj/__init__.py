"""dualobj: train and compare dual-objective (autoregressive + masked-diffusion) language models."""

__version__ = "0.1.0"
