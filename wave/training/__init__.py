"""The training engine: one deterministic, resumable, multi-process loop for any classifier.

engine.py (the loop), checkpoint.py (fingerprint and checkpoint file), distributed.py (devices
and torchrun), determinism.py (kernels and seeds), objectives.py (schedule, groups, losses),
evaluation.py (logits and test scores).
"""
