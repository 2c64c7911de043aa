"""Core types every stage shares: job specs and training settings, registry, seeding, errors, the training-set and mixing vocabulary, job statuses. Imports no plug-in and no later stage."""
