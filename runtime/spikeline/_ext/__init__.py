"""Compiled kernels (built from ext/*.pyx). Import through spikeline.kernels, never directly."""
