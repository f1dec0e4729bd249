"""The methods, each built on the core."""

from .resampling import NeuronScores, overlap, score_neurons

__all__ = ["NeuronScores", "overlap", "score_neurons"]
