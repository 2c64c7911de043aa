"""GenMed-Rare: a benchmark harness for synthetic data in rare-class medical image classification."""

from pathlib import Path

__version__ = "0.1.0"
# the checkout (or installed source tree) that holds registry/, slurm/ and launch/ beside this package
REPO_ROOT = Path(__file__).resolve().parent.parent
