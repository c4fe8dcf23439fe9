"""Performance tooling for MusePose Express: memory/time planner, activation and weight levers,
an original-algorithm cost model, and helpers for benchmarks.

Everything here applies to an already built ``MusePoseModels`` / ``MusePosePipeline`` from outside,
through documented APIs only (attention ``set_processor``, ``set_chunk_feed_forward``, module forward
hooks, the placement protocol). Nothing here changes what the engine computes, except the opt-in fp8
weight storage (a lossy weight format) and tiled VAE decoding (blends tile seams).
"""
from .planner import ModeChoice, Plan, choose_mode, plan, plan_all_modes

__all__ = ["ModeChoice", "Plan", "choose_mode", "plan", "plan_all_modes"]
