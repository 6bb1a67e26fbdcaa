"""Code shared by several chapters (closed-form batching, network training, FoMoH optimisation loops)."""
