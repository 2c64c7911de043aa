"""What a classifier job will hold in memory, for ``--dry-run``: the dataset's images (count × channels × size², in
the process or memory-mapped from the image cache and shared through the page cache), the training copies (the
cell's kept images, a fold's train/val, the method's enlarged training set), a measured process baseline (torch,
the model, optimiser, batches), and on a GPU the job's images on the device; checked against the cluster profile's
``mem_gb`` (per node, for the processes it runs at once) and this machine's memory for local workers. An estimate
from the label counts and array headers: light (no torch), no image is decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# A classifier job's memory besides its images: torch, timm, accelerate, the model, optimiser state and batches.
# Measured with benchmarks/memory.py (2,000 RGB 128-px images memory-mapped, timm test_resnet, batch 32) on this
# project's 2-core CPU host, 2026-12-07: peak anonymous RSS 1.13 GB. Larger backbones and images add activations
# that this estimate leaves out (the line says so).
PROCESS_BASE_BYTES = int(1.0 * 2**30)


@dataclass
class JobMemory:
    name: str
    images: int           # every image of the dataset (train + val + test)
    image_bytes: int      # bytes of one image (channels × size²)
    channels_known: bool
    mapped: bool          # the dataset's images are memory-mapped (page cache, shared by a node's jobs)
    copies: int           # bytes of the training copies this job makes
    device: int           # bytes of the job's images on a CUDA device (training set + val + test)

    @property
    def dataset(self) -> int:
        return self.images * self.image_bytes

    @property
    def host(self) -> int:
        """Bytes the process holds itself (memory-mapped images not counted: see ``shared``)."""
        return PROCESS_BASE_BYTES + (0 if self.mapped else self.dataset) + self.copies

    @property
    def shared(self) -> int:
        return self.dataset if self.mapped else 0


def gb(n: float) -> str:
    return f"{n / 2**30:,.2f} GB" if n >= 2**28 else f"{n / 2**20:,.1f} MB"


def job_memory(spec, labels: dict, channels: int | None, mapped: bool) -> JobMemory | None:
    """The memory of one classifier job from its dataset's split labels; None when its rarity is infeasible."""
    from benchmark.plan.cost import _images_per_epoch

    sizes = _images_per_epoch(spec, labels)
    if sizes is None:
        return None
    train_total, n_val, n_test, real = sizes
    per_image = (channels or 3) * spec.image_size ** 2
    n_train = len(labels["train"])
    folded = bool(getattr(spec, "k_folds", 0))
    copies = (n_train + n_val) * per_image if folded else 0  # a fold's train and val parts are gathered copies
    if spec.rare_count != "all" or folded:
        copies += real * per_image  # the cell's kept images: a copy unless they are the whole split (a view)
    if train_total > real:
        copies += train_total * per_image  # the method's enlarged set: real + added images, concatenated
    return JobMemory(spec.name, sum(len(v) for v in labels.values()), per_image, channels is not None, mapped,
                     copies, (train_total + n_val + n_test) * per_image)


def _dataset_facts(dataset: str, size: int) -> tuple[int | None, bool]:
    """(channels per image or None when unknown before decoding, whether loading memory-maps the images)."""
    from benchmark.data import dataset_source

    source = dataset_source(dataset)
    channels = source.image_channels(size) if hasattr(source, "image_channels") else None
    mapped = bool(source.memory_mapped(size)) if hasattr(source, "memory_mapped") else False
    return channels, mapped


def largest_jobs(jobs: list) -> dict:
    """{(dataset, size): the JobMemory of its classifier job with the most host memory}."""
    from benchmark.plan.cost import _label_counts

    labels_cache: dict = {}
    largest: dict = {}
    for spec in jobs:
        if getattr(spec, "stage", "") != "classifier":
            continue
        group = (spec.dataset, spec.image_size)
        labels = _label_counts(spec.dataset, spec.image_size, labels_cache)
        if labels is None:
            continue
        if group not in largest:
            largest[group] = (_dataset_facts(*group), None)
        facts, best = largest[group]
        memory = job_memory(spec, labels, *facts)
        if memory is not None and (best is None or memory.host > best.host):
            largest[group] = (facts, memory)
    return {group: best for group, (_, best) in largest.items() if best is not None}


def machine_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_lines(jobs: list, profile=None, local_workers: int | None = None,
                 total_bytes: int | None = None) -> tuple[list[str], list[str]]:
    """(``memory`` lines, warnings) for --dry-run: per dataset and size, the largest classifier job; then the
    check against the classifier stage's cluster `profile` (mem_gb per node, tasks_per_node × jobs_per_device
    processes) or, for `local_workers` local worker processes, against `total_bytes` (this machine's memory)."""
    lines, warnings = [], []
    largest = largest_jobs(jobs)
    for (dataset, size), m in sorted(largest.items(), key=lambda kv: str(kv[0])):
        channels = "" if m.channels_known else " (channels unknown before decoding: 3 assumed)"
        where = "memory-mapped (image cache, page cache shared by the node's jobs)" if m.mapped else \
            "in each process"
        lines.append(f"{dataset} @{size}px: {m.images:,} images × {m.image_bytes:,} bytes = {gb(m.dataset)} "
                     f"{where}{channels}; a classifier job holds up to {gb(m.host)} ({gb(PROCESS_BASE_BYTES)} "
                     f"process + {gb(0 if m.mapped else m.dataset)} dataset + {gb(m.copies)} training copies; "
                     f"activations of large backbones and images not included), {gb(m.device)} of images on a "
                     f"GPU ({m.name})")
    if not largest:
        return lines, warnings
    worst_host = max(m.host for m in largest.values())
    shared = max(m.shared for m in largest.values())
    if profile is not None and profile.mem_gb is not None:
        processes = int(profile.tasks_per_node) * int(getattr(profile, "jobs_per_device", 1) or 1)
        need, have = processes * worst_host + shared, float(profile.mem_gb) * 2**30
        text = (f"cluster profile {profile.name} ({profile.path}): {profile.mem_gb:g} GB per node for {processes} "
                f"process(es) × {gb(worst_host)}" + (f" + {gb(shared)} memory-mapped" if shared else ""))
        lines.append(text + (": fits" if need <= have else f": needs {gb(need)}"))
        if need > have:
            warnings.append(f"memory: a node of cluster profile {profile.name} would need ~{gb(need)} but "
                            f"{profile.path} gives mem_gb {profile.mem_gb:g}; raise mem_gb (or use a profile with "
                            "more), lower jobs_per_device, or use a smaller image_size.")
    if local_workers and total_bytes:
        need = local_workers * worst_host + shared
        lines.append(f"this machine: {gb(total_bytes)} for {local_workers} local worker(s) × {gb(worst_host)}"
                     + (f" + {gb(shared)} memory-mapped" if shared else "")
                     + (": fits" if need <= total_bytes else f": needs {gb(need)}"))
        if need > total_bytes:
            warnings.append(f"memory: {local_workers} local worker(s) would need ~{gb(need)} but this machine has "
                            f"{gb(total_bytes)}; run with fewer workers (--parallel), or on a cluster.")
    return lines, warnings
