"""The bad-input corpus (issue 21, item 3): each case builds one bad dataset or external bank in tmp_path, runs the
real CLI (`launch/grid.py --grid <tmp yaml> --dry-run`) and checks that it exits 2 before anything starts, with a
message naming the file and the fix, no traceback and no result.json. A few look-alike inputs that are fine (float
labels 0.0/1.0, an explicit channels-first layout, mixed image sizes, 16-bit PNG, CMYK JPEG) must pass."""

import io
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.dataset_makers import make_csv, make_folders, make_npz, write_png

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"train": [12, 6], "val": [3, 3], "test": [3, 3]}


def run_dry_run(tmp_path, dataset: dict | None = None, generator: dict | None = None, axes: dict | None = None):
    """`launch/grid.py --dry-run` on a grid of the registered `dataset` (else breastmnist) and `generator` (else
    none), with its own registry folder, cache and results folder."""
    reg = tmp_path / "reg"
    for kind, entry, name in (("dataset", dataset, "mine"), ("generator", generator, "my_bank")):
        if entry is not None:
            (reg / f"{kind}s").mkdir(parents=True, exist_ok=True)
            (reg / f"{kind}s" / f"{name}.yaml").write_text(yaml.safe_dump({"version": 1, **entry}))
    grid_axes = {"dataset": ["mine" if dataset else "breastmnist"], "backbone": ["resnet18"], "seed": [0],
                 "generator": ["my_bank" if generator else "none"], "rare_count": ["all"], **(axes or {})}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "bad", "version": 1, "axes": grid_axes, "training": {"epochs": 1}}))
    env = {**os.environ, "GENMED_REGISTRY_PATH": str(reg), "GENMED_CACHE_DIR": str(tmp_path / "cache"),
           "GENMED_DATA_DIR": os.environ.get("GENMED_DATA_DIR", str(REPO.parent / "shared" / "data"))}
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, str(REPO / "launch" / "grid.py"), "--grid", str(grid), "--dry-run",
                           "--results", str(results)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert not list(results.rglob("result.json")) if results.exists() else True
    return done


def npz_entry(path: Path, **config) -> dict:
    return {"target": "benchmark.data.npz:NpzDataset", "config": {"path": str(path), "image_size": 28, **config}}


def folder_entry(root: Path, **config) -> dict:
    return {"target": "benchmark.data.folders:FolderDataset",
            "config": {"root": str(root), "image_size": 28, **config}}


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    """The arrays of a good MedMNIST-format file (two learnable classes), each case breaks one thing."""
    with np.load(make_npz(tmp_path_factory.mktemp("base") / "base.npz", SPLITS)) as npz:
        return {k: npz[k] for k in npz.files}


def saved(tmp_path, arrays, **changes) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **{**arrays, **changes})
    return path


def labels_with(arrays, split: str, index: int, value, dtype=np.float64) -> np.ndarray:
    labels = arrays[f"{split}_labels"].astype(dtype).copy()
    labels[index] = value
    return labels


# --- .npz datasets --------------------------------------------------------------------------------------------
def huge_header_npz(path: Path, arrays) -> Path:
    """A well-formed .npz whose train_images header declares 10^9 images but stores a few bytes (an attacker's
    memory bomb: numpy would allocate the declared size before reading)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**9, 28, 28)})
    buffer.write(b"\0" * 64)
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            if key == "train_images":
                archive.writestr("train_images.npy", buffer.getvalue())
                continue
            member = io.BytesIO()
            np.save(member, value)
            archive.writestr(f"{key}.npy", member.getvalue())
    return path


def cut(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def flipped_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside train_images' data: the member's CRC no longer matches
    path.write_bytes(bytes(data))
    return path


NPZ_CASES = {
    "channels-first images": (lambda t, a: saved(t, a, train_images=np.repeat(a["train_images"][:, None], 3, 1)),
                              "looks channels-first", "layout: nchw"),
    "float images": (lambda t, a: saved(t, a, train_images=a["train_images"] / 255.0),
                     "images must be uint8", "astype(np.uint8)"),
    "RGBA images": (lambda t, a: saved(t, a, train_images=np.repeat(a["train_images"][..., None], 4, 3)),
                    "4 channels", "drop alpha"),
    "wrong image size": (lambda t, a: saved(t, a, val_images=np.zeros((6, 32, 32), np.uint8)),
                         "images are 32×32", "Fix image_size"),
    "non-square images": (lambda t, a: saved(t, a, test_images=np.zeros((6, 28, 30), np.uint8)),
                          "images are 28×30", "resize the images"),
    "NaN label": (lambda t, a: saved(t, a, train_labels=labels_with(a, "train", 3, np.nan)),
                  "NaN or infinite (first at index 3", "Give every image a class index"),
    "negative label": (lambda t, a: saved(t, a, test_labels=labels_with(a, "test", 0, -1, np.int64)),
                       "negative label(s)", "remove those images"),
    "fractional label": (lambda t, a: saved(t, a, val_labels=labels_with(a, "val", 1, 0.5)),
                         "not whole numbers", "class indices 0..K-1"),
    "text labels": (lambda t, a: saved(t, a, train_labels=a["train_labels"].astype(str)),
                    "labels are text", "label_names"),
    "label beyond label_names": (lambda t, a: saved(t, a, train_labels=labels_with(a, "train", 0, 2, np.int64)),
                                 "label 2 (train index 0) is outside 0..1", "add its class to label_names"),
    "label gap leaves an empty class": (lambda t, a: saved(t, a, **{f"{s}_labels": a[f"{s}_labels"] * 2
                                                                   for s in ("train", "val", "test")}),
                                        "class(es) 1 of 0..2 have no train images", "renumber them"),
    "single class": (lambda t, a: saved(t, a, **{f"{s}_labels": a[f"{s}_labels"] * 0
                                                 for s in ("train", "val", "test")}),
                     "at least two classes", "two classes"),
    "empty val split": (lambda t, a: saved(t, a, val_images=np.zeros((0, 28, 28), np.uint8),
                                           val_labels=np.zeros((0, 1), np.int64)),
                        "split 'val' has no images", "needs images"),
    "fewer labels than images": (lambda t, a: saved(t, a, test_labels=a["test_labels"][:-1]),
                                 "test has 6 images but 5 labels", "needs one label"),
    "missing array": (lambda t, a: saved(t, {k: v for k, v in a.items() if k != "val_labels"}),
                      "lacks val_labels", "a MedMNIST-format file has"),
    "object array": (lambda t, a: saved(t, a, train_labels=np.array([1, "x", None] * 6, dtype=object)),
                     "object (pickled) array", "numpy.savez"),
    "zero-byte file": (lambda t, a: cut(saved(t, a), 0), "empty, truncated or not an .npz",
                       "Write it again with numpy.savez"),
    "truncated file": (lambda t, a: cut(saved(t, a), 2000),
                       "empty, truncated or not an .npz", "Write it again with numpy.savez"),
    "flipped byte (CRC)": (lambda t, a: flipped_byte(saved(t, a)), "truncated or corrupt",
                           "Write it again with numpy.savez"),
    "header declares 10^9 images": (lambda t, a: huge_header_npz(t / "data.npz", a),
                                    "declares shape (1000000000, 28, 28)", "Write it again"),
}


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_a_bad_npz_dataset_exits_2_naming_the_file_and_the_fix(tmp_path, arrays, case):
    make, said, fix = NPZ_CASES[case]
    path = make(tmp_path, arrays)
    config = {"label_names": ["a", "b"]} if case == "label beyond label_names" else {}
    done = run_dry_run(tmp_path, npz_entry(path, **config))
    assert done.returncode == 2, (case, done.stdout, done.stderr)
    assert str(path) in done.stderr and said in done.stderr and fix in done.stderr, (case, done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("case", ["float labels 0.0/1.0", "explicit nchw layout"])
def test_look_alike_npz_inputs_that_are_fine_pass(tmp_path, arrays, case):
    if case == "float labels 0.0/1.0":
        path = saved(tmp_path, arrays, **{f"{s}_labels": arrays[f"{s}_labels"].astype(np.float32)
                                          for s in ("train", "val", "test")})
        config = {}
    else:
        path = saved(tmp_path, arrays, **{f"{s}_images": np.repeat(arrays[f"{s}_images"][:, None], 3, 1)
                                          for s in ("train", "val", "test")})
        config = {"layout": "nchw"}
    done = run_dry_run(tmp_path, npz_entry(path, **config))
    assert done.returncode == 0, done.stderr
    assert "train class counts [12, 6]" in done.stdout


def test_channels_first_images_with_layout_nchw_load_as_the_same_pixels(tmp_path, arrays, monkeypatch):
    """The explicit transposition is exact: the nchw file loads to the same pixels as the MedMNIST (nhwc) one."""
    from benchmark.data.npz import NpzDataset

    monkeypatch.setenv("GENMED_CACHE_DIR", str(tmp_path / "cache"))
    rgb = {k: (np.stack([v, 255 - v, v // 2], -1) if k.endswith("images") else v) for k, v in arrays.items()}
    np.savez(tmp_path / "nhwc.npz", **rgb)
    np.savez(tmp_path / "nchw.npz", **{k: (v.transpose(0, 3, 1, 2) if k.endswith("images") else v)
                                       for k, v in rgb.items()})
    a = NpzDataset("a", str(tmp_path / "nhwc.npz"), 28).load(28)
    b = NpzDataset("b", str(tmp_path / "nchw.npz"), 28, layout="nchw").load(28)
    for split in ("train", "val", "test"):
        assert a.splits[split].images.shape[1:] == (3, 28, 28)
        np.testing.assert_array_equal(a.splits[split].images, b.splits[split].images)
        np.testing.assert_array_equal(a.splits[split].images[:, 1], 255 - rgb[f"{split}_images"][..., 0])


# --- image folders and metadata.csv ---------------------------------------------------------------------------
def bomb_png(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A PNG whose header claims width × height pixels (400 M, above PIL's 2 × 89 M bomb limit) — a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def non_utf8_name(root: Path) -> Path:
    folder = os.fsencode(root / "a")
    path = os.path.join(folder, b"caf\xe9.png")
    with open(path, "wb") as fh:
        fh.write((root / "a" / "img000.png").read_bytes())
    return root / "a"


def symlink_loop(root: Path) -> Path:
    os.symlink("loop.png", root / "a" / "loop.png")
    return root / "a" / "loop.png"


def truncated_png(root: Path) -> Path:
    path = root / "b" / "img001.png"
    path.write_bytes(path.read_bytes()[:60])
    return path


def text_as_png(root: Path) -> Path:
    path = root / "b" / "notes.png"
    path.write_text("not an image\n")
    return path


FOLDER_CASES = {
    "file name not UTF-8": (non_utf8_name, "is not valid UTF-8", "convmv"),
    "decompression bomb": (lambda root: bomb_png(root / "a" / "huge.png"), "too large to decode safely",
                           "GENMED_MAX_IMAGE_PIXELS"),
    "truncated PNG": (truncated_png, "Cannot read image", "Replace or remove the file"),
    "text file named .png": (text_as_png, "Cannot read image", "Replace or remove the file"),
    "symlink loop": (symlink_loop, "broken symbolic link or a symlink loop", "Remove it"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_a_bad_image_folder_exits_2_naming_the_file_and_the_fix(tmp_path, case):
    make, said, fix = FOLDER_CASES[case]
    root = make_folders(tmp_path / "d", {"a": 6, "b": 6}, shape=(28, 28))
    named = make(root)
    done = run_dry_run(tmp_path, folder_entry(root))
    assert done.returncode == 2, (case, done.stdout, done.stderr)
    shown = ascii(str(named)) if case == "file name not UTF-8" else str(named)
    assert (shown in done.stderr or str(named) in done.stderr) and said in done.stderr and fix in done.stderr, \
        (case, done.stderr)
    assert "Traceback" not in done.stderr


def test_a_folder_with_one_class_exits_2(tmp_path):
    root = make_folders(tmp_path / "d", {"only": 9}, shape=(28, 28))
    done = run_dry_run(tmp_path, folder_entry(root))
    assert done.returncode == 2 and "dataset 'mine'" in done.stderr and "at least two classes" in done.stderr
    assert "Traceback" not in done.stderr


def test_mixed_sizes_16_bit_png_and_cmyk_jpeg_are_accepted_and_converted(tmp_path, monkeypatch):
    """Fine inputs a tired user has: images of several sizes (resized), a 16-bit PNG (scaled by 1/257) and a CMYK
    JPEG (converted), with channels: 1 declared. The dry run passes; loading gives the documented pixels."""
    root = make_folders(tmp_path / "d", {"a": 6, "b": 6}, shape=(28, 28))
    write_png(root / "a" / "big.png", np.full((40, 56), 77, np.uint8))
    Image.fromarray(np.full((28, 28), 257 * 200, np.uint16)).save(root / "b" / "deep.png")
    Image.new("CMYK", (28, 28), (0, 0, 0, 0)).save(root / "b" / "print.jpg")  # CMYK white
    done = run_dry_run(tmp_path, folder_entry(root, channels=1))
    assert done.returncode == 0, done.stderr
    from benchmark.data.images import read_image

    assert Image.open(root / "b" / "deep.png").mode.startswith("I;16")
    assert (read_image(root / "b" / "deep.png", 28, 1)[0] == 200).all()
    assert (read_image(root / "a" / "big.png", 28, 1)[0] == 77).all()
    assert read_image(root / "b" / "print.jpg", 28, 1)[0].min() >= 250


CSV_CASES = {
    "label nan": ([("a/0.png", "nan", "train")], "has no label ('nan')", "Give it a label or remove the row"),
    "label 1 and 1.0": ([("a/0.png", "1.0", "train")], "look like one class spelled two ways", "one way"),
    "label Benign and benign": ([("a/0.png", "Benign", "train")], "spelled two ways", "declare label_names"),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_a_bad_metadata_csv_exits_2_naming_the_line(tmp_path, case):
    rows, said, fix = CSV_CASES[case]
    if "enign" in case:
        base = [(f"a/{i}.png", "benign", s) for i, s in zip(range(1, 7), ["train"] * 4 + ["val", "test"])]
    else:
        base = [(f"a/{i}.png", "1", s) for i, s in zip(range(1, 7), ["train"] * 4 + ["val", "test"])]
    base += [(f"b/{i}.png", "0" if "enign" not in case else "malignant", s)
             for i, s in zip(range(6), ["train"] * 4 + ["val", "test"])]
    csv = make_csv(tmp_path / "d", rows + base, header=("path", "label", "split"))
    for rel, *_ in rows + base:
        write_png(tmp_path / "d" / rel, np.full((28, 28), 9, np.uint8))
    done = run_dry_run(tmp_path, {"target": "benchmark.data.metadata_csv:MetadataCsvDataset",
                                  "config": {"path": str(csv), "image_size": 28}})
    assert done.returncode == 2, (case, done.stdout, done.stderr)
    named = f"{csv}:2" in done.stderr or f"{csv}:3" in done.stderr and "(line 2)" in done.stderr
    assert named and said in done.stderr and fix in done.stderr, (case, done.stderr)
    assert "Traceback" not in done.stderr


def test_a_symlink_loop_named_in_metadata_csv_exits_2(tmp_path):
    rows = [(f"{c}/{i}.png", c, s) for c in "ab" for i, s in zip(range(6), ["train"] * 4 + ["val", "test"])]
    csv = make_csv(tmp_path / "d", rows + [("a/loop.png", "a", "train")], header=("path", "label", "split"))
    for rel, *_ in rows:
        write_png(tmp_path / "d" / rel, np.full((28, 28), 9, np.uint8))
    os.symlink("loop.png", tmp_path / "d" / "a" / "loop.png")
    done = run_dry_run(tmp_path, {"target": "benchmark.data.metadata_csv:MetadataCsvDataset",
                                  "config": {"path": str(csv), "image_size": 28}})
    assert done.returncode == 2 and f"{csv}:14" in done.stderr and "symbolic link loop" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# --- external banks (for the real BreastMNIST: rare class 'malignant', 147 training images) --------------------
def bank_folder(root: Path, n_rare: int = 30, other: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for name, n in (("malignant", n_rare), ("normal, benign", other)):
        for i in range(n):
            write_png(root / name / f"{i:04d}.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    return root


def bank_entry(path: Path) -> dict:
    return {"target": "benchmark.generators.external:ExternalBank",
            "config": {"kind": "external", "uses_synthetic_ratio": True, "path": str(path),
                       "dataset": "breastmnist"}}


def bank_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def not_an_image(root: Path) -> Path:
    path = bank_folder(root) / "malignant" / "0003.png"
    path.write_bytes(b"GIF89a junk")
    return path


BANK_CASES = {
    "a file that is not an image": (lambda t: not_an_image(t / "bank"), {}, "Cannot read image",
                                    "Replace or remove"),
    "truncated .npz": (lambda t: cut(bank_npz(t / "bank.npz", images=np.zeros((30, 28, 28), np.uint8),
                                              labels=np.array(["malignant"] * 30)), 500), {},
                       "empty, truncated or not an .npz", "Write it again with numpy.savez"),
    "object arrays in the .npz": (lambda t: bank_npz(t / "bank.npz", images=np.zeros((3, 28, 28), np.uint8),
                                                     labels=np.array(["malignant", 1, None], dtype=object)), {},
                                  "object (pickled) arrays", "store plain arrays"),
    "no image of the rare class": (lambda t: bank_folder(t / "bank", n_rare=0, other=30), {},
                                   "holds 0 image(s) of the rare class 'malignant'", "Add images of that class"),
    "fewer rare images than the grid asks": (lambda t: bank_folder(t / "bank", n_rare=5),
                                             {"rare_count": [20], "synthetic_ratio": [1]},
                                             "holds 5 image(s) of the rare class 'malignant'; synthetic_ratio 1.0 at "
                                             "rare_count 20 needs 20", "use a smaller ratio"),
}


@pytest.mark.parametrize("case", list(BANK_CASES))
def test_a_bad_external_bank_exits_2_naming_the_file_and_the_fix(tmp_path, case):
    make, axes, said, fix = BANK_CASES[case]
    named = make(tmp_path)
    bank = tmp_path / "bank.npz" if (tmp_path / "bank.npz").exists() else tmp_path / "bank"
    done = run_dry_run(tmp_path, generator=bank_entry(bank), axes={"rare_count": [20], **axes})
    assert done.returncode == 2, (case, done.stdout, done.stderr)
    assert str(named) in done.stderr and said in done.stderr and fix in done.stderr, (case, done.stderr)
    assert "Traceback" not in done.stderr


def test_a_bank_with_enough_rare_images_passes(tmp_path):
    done = run_dry_run(tmp_path, generator=bank_entry(bank_folder(tmp_path / "bank", n_rare=20)),
                       axes={"rare_count": [20], "synthetic_ratio": [1]})
    assert done.returncode == 0, done.stderr
