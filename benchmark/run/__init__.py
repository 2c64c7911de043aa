"""Running one job: the job callable and packs (job, batch), the cell (cell), training (train, metrics, backbones, tracking), its run folder (run_dir) and threads."""
