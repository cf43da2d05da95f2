"""Training: optimizer/schedule builders, the jitted train step, the loop shared by all stages."""
