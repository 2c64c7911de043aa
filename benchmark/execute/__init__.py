"""Executing planned jobs: the executors (debug, local) and SLURM (slurm/)."""
