"""Config checks that build a grid's generative methods once (no data, no training), so a bad config stops the run
before any job starts."""

from __future__ import annotations

from benchmark.core.errors import UserError
from benchmark.data import dataset_source


def check_generator_configs(jobs: list) -> None:
    """Build every generative method once with its registry config (no training) so that a bad config — an
    unknown sampler, a negative guidance scale, a typo in a key — stops the run before any job starts."""
    from benchmark.core import registry
    from benchmark.generators.extractor import check_audit_extractor

    seen = set()
    for spec in jobs:
        if getattr(spec, "stage", "") != "classifier" or not spec.is_generative:
            continue
        marker = (spec.generator, spec.dataset, spec.image_size)
        if marker in seen:
            continue
        seen.add(marker)
        entry = registry.get("generator", spec.generator)
        source = dataset_source(spec.dataset)
        channels = getattr(source, "info", {}).get("n_channels", 1)
        try:
            registry.create("generator", entry, num_classes=source.num_classes or 2,
                            image_shape=(channels, spec.image_size, spec.image_size))
            check_audit_extractor(entry.config.get("audit_extractor"))
        except UserError as exc:
            raise UserError(f"generator {spec.generator!r} ({entry.source}): {exc} Nothing was started.") from None
