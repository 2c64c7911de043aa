"""``metadata.csv`` datasets: one row per image with columns path, label and split (other columns are ignored).

Registry entry (``docs/datasets.md`` has complete examples)::

    target: benchmark.data.metadata_csv:MetadataCsvDataset
    version: 1
    config:
      path: /data/derm/metadata.csv    # image paths in it are relative to the CSV's folder (the dataset root)
      image_size: 64
      channels: 3                      # optional, as for image folders
      label_names: [benign, malignant] # optional: fixes the class order; a label not in it is an error
      columns: {path: file, label: diagnosis, split: fold}   # optional: other column names
      split_ratios: {train: 0.7, val: 0.1, test: 0.2}   # used only when the CSV has no split column
      split_seed: 0

Split values: train, val (or valid, validation), test. Errors name the CSV line: an empty or missing path, a path
outside the CSV's folder, an unknown label or split, the same image twice, a missing label (empty, ``nan``,
``NA``, ``None``, … — never a class of its own unless label_names declares it). Without label_names, one class
spelled two ways (``1`` and ``1.0``, ``Benign`` and ``benign``) is an error, never two classes. The content hash
covers the CSV and every image file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from benchmark.core.errors import UserError
from benchmark.data.folders import FileDataset
from benchmark.data.images import SPLIT_NAMES, check_inside

DEFAULT_COLUMNS = {"path": "path", "label": "label", "split": "split"}
# How spreadsheets and pandas write a missing value: refused as a label unless label_names declares it.
MISSING_LABELS = {"", "nan", "na", "n/a", "none", "null", "?", "-", "missing", "unknown"}


class MetadataCsvDataset(FileDataset):
    kind = "metadata.csv"

    def __init__(self, name: str, path, image_size: int, columns: dict | None = None, **config):
        super().__init__(name, path, image_size, **config)
        self.csv_path = self.root
        unknown = set(columns or {}) - set(DEFAULT_COLUMNS)
        if unknown:
            raise UserError(f"{self.where}: unknown 'columns' key(s) {', '.join(sorted(unknown))}; valid: path, "
                            "label, split.")
        self.columns = {**DEFAULT_COLUMNS, **(columns or {})}

    def is_present(self, size: int) -> bool:
        return self.csv_path.is_file()

    def ensure(self, size: int) -> Path:
        if not self.csv_path.is_file():
            raise UserError(f"{self.where}: {self.csv_path} does not exist. Fix 'path' in its registry entry.")
        self._check_size(size)
        return self.csv_path

    def hashed_files(self) -> list:
        return [self.csv_path, *self.index[0]]

    def _validate_files(self, files: list) -> None:
        from benchmark.data.validate import check_image_files

        check_image_files(self.csv_path.parent, files)

    def _read(self, files: list, allocate=None, slots=None):
        from benchmark.data.images import load_images

        return load_images(files, self.image_size, self.channels, self.csv_path.parent, allocate, slots)

    def _scan(self) -> tuple[list, list]:
        root = self.csv_path.parent
        try:
            with open(self.csv_path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = reader.fieldnames or []
                rows = [(reader.line_num, row) for row in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise UserError(f"{self.where}: cannot read {self.csv_path} ({type(exc).__name__}: {exc}).") from None
        col = self.columns
        missing = [col[c] for c in ("path", "label") if col[c] not in header]
        if missing:
            raise UserError(f"{self.csv_path}: missing column(s) {', '.join(missing)}; it has {', '.join(header)}. "
                            "Rename them or map them with 'columns' in the registry entry.")
        has_split = col["split"] in header
        if not rows:
            raise UserError(f"{self.csv_path}: no rows.")
        raw_labels = [(row.get(col["label"]) or "").strip() for _, row in rows]
        if self.label_names is not None:
            names = list(self.label_names)
        else:
            self._check_label_spellings(rows, raw_labels)
            unique = sorted({label for label in raw_labels if label})
            names = sorted(unique, key=int) if all(u.lstrip("-").isdigit() for u in unique) else unique
        index = {name: i for i, name in enumerate(names)}
        items, seen = [], {}
        for (line, row), label in zip(rows, raw_labels):
            where = f"{self.csv_path}:{line}"
            rel = (row.get(col["path"]) or "").strip()
            if not rel:
                raise UserError(f"{where}: empty '{col['path']}'.")
            path = root / rel
            real = check_inside(path, root, where)
            if not real.is_file():
                raise UserError(f"{where}: image {path} does not exist.")
            if label not in index and (not label or label.lower() in MISSING_LABELS):
                raise UserError(f"{where}: {rel} has no label ({label!r}). Give it a label or remove the row; a "
                                "missing label is never a class of its own.")
            if label not in index:
                raise UserError(f"{where}: unknown label {label!r} for {rel}; known labels: {', '.join(names)}. "
                                "Fix the row or add the label to label_names.")
            split = None
            if has_split:
                value = (row.get(col["split"]) or "").strip()
                if value.lower() not in SPLIT_NAMES:
                    raise UserError(f"{where}: unknown split {value!r} for {rel}; use train, val or test.")
                split = SPLIT_NAMES[value.lower()]
            if real in seen:
                raise UserError(f"{where}: {rel} is listed again (first at line {seen[real]}); each image once.")
            seen[real] = line
            items.append((path, index[label], split))
        splits_present = {s for _, _, s in items}
        if has_split and not {"train", "test"} <= splits_present:
            raise UserError(f"{self.csv_path}: the split column needs train and test rows (val is optional: without "
                            "val rows, val is carved out of train).")
        present = {(label, s) for _, label, s in items}
        for i, name in enumerate(names):
            for split in sorted(splits_present, key=str):
                if (i, split) not in present:
                    place = f" in split {split!r}" if split else ""
                    raise UserError(f"{self.where}: class {name!r} has no images{place} in {self.csv_path}. "
                                    "Add rows for it or remove it from label_names.")
        return items, names

    def _check_label_spellings(self, rows: list, raw_labels: list) -> None:
        """Without label_names: a missing label, and one class spelled two ways (numbers or letter case)."""
        first: dict = {}
        for (line, row), label in zip(rows, raw_labels):
            where = f"{self.csv_path}:{line}"
            if label.lower() in MISSING_LABELS:
                raise UserError(f"{where}: {(row.get(self.columns['path']) or '').strip()!r} has no label "
                                f"({label!r}). Give it a label or remove the row; a missing label is never a class "
                                "of its own (declare label_names to use such a name on purpose).")
            try:
                canonical = repr(float(label))
            except ValueError:
                canonical = label.casefold()
            seen = first.setdefault(canonical, (label, line))
            if seen[0] != label:
                raise UserError(f"{where}: label {label!r} and {seen[0]!r} (line {seen[1]}) look like one class "
                                "spelled two ways. Write it one way throughout, or declare label_names to keep them "
                                "apart.")
