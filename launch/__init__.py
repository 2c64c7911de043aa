"""The command-line programs a user runs (argparse lives only here): grid.py, collect.py, predict.py; installed as genmed-grid, genmed-collect and genmed-predict."""
