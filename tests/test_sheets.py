"""The generators' picture sheets (benchmark.generators.sheets) and the report's short audit table
(benchmark.collect.report_figures.audit_brief): pixels against an independent upscaling, layout against the constants;
the collector's copies of the sheets (benchmark.collect.report_figures: copy, bring along, load, a corrupt index named)."""

import numpy as np
import pandas as pd
from PIL import Image

from benchmark.collect.report_figures import (
    AUDIT_BRIEF, SAMPLES_DIR, SAMPLES_INDEX, audit_brief, copy_sheets, load_sheets, sheets_in
)
from benchmark.generators import sheets


def images(n, seed, size=28):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


def tile(sheet: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return sheet[top:top + size, left:left + size]


def find(sheet: np.ndarray, block: np.ndarray) -> tuple[int, int]:
    """(row, column) where `block` appears in `sheet` (exact), searched on the first row's pixels."""
    h, w = block.shape
    for r in range(sheet.shape[0] - h + 1):
        for c in np.flatnonzero(sheet[r, : sheet.shape[1] - w + 1] == block[0, 0]):
            if np.array_equal(sheet[r:r + h, c:c + w], block):
                return r, int(c)
    raise AssertionError("block not found in the sheet")


def test_sample_sheet_shows_real_and_synthetic_upscaled_side_by_side(tmp_path):
    real, syn = images(20, 0), images(100, 1)
    path = sheets.sample_sheet(real, syn, "dcgan[cell]", tmp_path / "s.png")
    sheet = np.asarray(Image.open(path))
    s = 28 * sheets.SCALE
    up = lambda im: np.kron(im[0], np.ones((sheets.SCALE, sheets.SCALE), np.uint8))  # noqa: E731
    r0, c0 = find(sheet, up(real[0]))
    r1, c1 = find(sheet, up(syn[0]))
    assert r0 == r1 and c1 > c0 + sheets.COLUMNS * s  # synthetic panel to the right, same top
    # the 9th real image starts the second row; the 64th synthetic image ends the 8th row of its panel
    assert np.array_equal(tile(sheet, r0 + s + sheets.GAP, c0, s), up(real[8]))
    step = s + sheets.GAP
    assert np.array_equal(tile(sheet, r1 + 7 * step, c1 + 7 * step, s), up(syn[63]))
    width = 2 * (sheets.COLUMNS * step - sheets.GAP) + 3 * sheets.MARGIN
    assert sheet.shape[1] == width and sheet.shape[0] > sheets.COLUMNS * step


def test_closest_pairs_sheet_puts_each_nearest_training_image_under_its_synthetic_image(tmp_path):
    syn, train = images(40, 2), images(60, 3)
    nearest = np.random.default_rng(4).integers(0, 60, 40)
    distance = np.random.default_rng(5).random(40)
    path = sheets.closest_pairs_sheet(syn, train, nearest, distance, 0.1, "ddpm[cell]", tmp_path / "c.png", n=16)
    sheet = np.asarray(Image.open(path))
    s = 28 * sheets.SCALE
    up = lambda im: np.kron(im[0], np.ones((sheets.SCALE, sheets.SCALE), np.uint8))  # noqa: E731
    order = np.argsort(distance, kind="stable")
    r, c = find(sheet, up(syn[order[0]]))
    below = sheet[r + s:, c:c + s]
    rr, _ = find(below, up(train[nearest[order[0]]]))
    assert 0 < rr < 3 * sheets._FONT_SIZE  # directly under it, past its caption
    r8, c8 = find(sheet, up(syn[order[8]]))  # the 9th closest starts the third row of tiles
    assert c8 == c and r8 > r + 2 * s


def test_audit_brief_keeps_the_columns_a_reader_needs_and_explains_each():
    audit = pd.DataFrame({"dataset": ["breastmnist"] * 2, "image_size": [28, 28], "rare_class": [0, 0],
                          "rare_count": [20, 20], "generator": ["dcgan", "ddpm_cpu"],
                          "audit_domain_kid": [0.01, 0.02], "audit_copy_rate": [0.0, 0.1],
                          "audit_fid": [np.nan, np.nan], "audit_ssim_nn_mean": [0.3, 0.4]})
    table, lines = audit_brief(audit)
    assert list(table.columns) == ["generator", "KID (in-domain)", "copy rate"]  # FID all blank, SSIM in the CSV
    assert table["copy rate"].tolist() == [0.0, 0.1]
    labels = {label: why for _, label, why in AUDIT_BRIEF}
    assert lines == [f"**KID (in-domain)**: {labels['KID (in-domain)']}", f"**copy rate**: {labels['copy rate']}"]


def test_sheets_collected_elsewhere_travel_with_the_records(tmp_path):
    run = tmp_path / "runs" / "k1"
    run.mkdir(parents=True)
    (run / "sheet.png").write_bytes(b"sheet bytes")  # no closest-pairs sheet: left out, not an error
    label = "dcgan · ds0 · rare 20"
    first = copy_sheets({label: {"sheet": run / "sheet.png", "closest": run / "closest.png", "key": "k1",
                                 "seed": 0}}, tmp_path / "a")
    assert first == {label: {"key": "k1", "seed": 0, "sheet": f"{SAMPLES_DIR}/dcgan_ds0_rare_20_sheet.png"}}
    copy_sheets(sheets_in(tmp_path / "a"), tmp_path / "b")  # records collected again into another folder
    index = f"{SAMPLES_DIR}/{SAMPLES_INDEX}"
    assert (tmp_path / "b" / index).read_bytes() == (tmp_path / "a" / index).read_bytes()
    assert load_sheets(tmp_path / "b") == {label: {"key": "k1", "seed": 0,
                                                   "sheet": (first[label]["sheet"], b"sheet bytes")}}


def test_an_unreadable_sheet_index_is_named_in_a_warning_not_crashed_on(tmp_path, capsys):
    path = tmp_path / SAMPLES_DIR / SAMPLES_INDEX
    path.parent.mkdir()
    for corrupt in ('{"dcgan · ds0": {"sheet": ', "[1, 2]", '{"dcgan · ds0": "samples/x.png"}'):
        path.write_text(corrupt)
        assert load_sheets(tmp_path) == {} and sheets_in(tmp_path) == {}
        err = capsys.readouterr().err
        assert err.count(f"warning: unreadable picture-sheet index {path} (") == 2, err
        assert "the report shows no sheets from it" in err
    path.write_bytes(b"\xff\xfe not utf-8")
    assert load_sheets(tmp_path) == {} and str(path) in capsys.readouterr().err
