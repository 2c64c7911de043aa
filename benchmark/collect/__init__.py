"""Collecting finished jobs: the records table (records), the report and its tables, plots and figures, the study write-up tables (study)."""
