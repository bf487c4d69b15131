"""Trajectory diffusion: schedules, denoisers, the Gaussian process, samplers, world model."""
