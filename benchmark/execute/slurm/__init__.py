"""SLURM execution of a grid through submitit, one module per concern: ``profiles`` (the cluster profile of each
stage), ``manifest`` (``results/<grid label>/submissions.jsonl`` and the squeue/sacct/scancel calls), ``state`` (each
job's status from its run folder and SLURM), ``submit`` (what to submit, and the sbatch calls: job arrays per stage,
classifier arrays that wait (afterok) for exactly the generator jobs they need, a collector job after everything)
``follow`` (the status report, ``--wait``, ``--cancel``) and ``reachable`` (whether sbatch reaches a
controller from here). ``launch/grid.py`` prints what they return.

Importing any of them is cheap (no submitit, no torch): ``--status`` and ``--wait`` only run ``squeue``/``sacct``.
"""
