"""GenMed-Rare: a benchmark harness for synthetic data in rare-class medical image classification."""

__version__ = "0.1.0"
