"""Interoperability: score a dualobj run with lm-evaluation-harness, load it with Hugging Face transformers.

Modules: ``runs`` (which runs and modes these tools accept) -> ``harness`` (the lm-eval model ``dualobj``,
needs the ``harness`` extra) and ``export`` (``dualobj export``: a self-contained Hugging Face folder, loaded
by ``modeling_dualobj``, the one file here that never imports dualobj: it is copied next to the weights).
"""
