"""vptbench orchestrator: grid cells, measurement, training, results store and reports."""
__version__ = "0.1.0"
