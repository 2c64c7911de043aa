"""Classify new images with a finished run's weights:

    python launch/predict.py --run 3f9c2a1b7d4e5f60 --images scans/ extra.png
    python launch/predict.py --run results/rare_sweep/runs/3f9c2a1b7d4e5f60 --images breastmnist.npz --split test

Writes a CSV (file, predicted_label, confidence, prob_<class> …) and prints a short table. Details:
benchmark/predict.py and README "Prediction".
"""

import argparse
import sys

from benchmark.core.errors import exits_on_user_error
from benchmark.run.run_dir import RESULTS_HELP, results_root


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="job key (or unique prefix) or run folder (runs/<key>)")
    p.add_argument("--images", required=True, nargs="+", metavar="PATH",
                   help="image files (.png/.jpg/.jpeg), NIfTI files, folders, or .npz files")
    p.add_argument("--out", help="CSV to write (default: predictions-<key>.csv)")
    p.add_argument("--split", default="test", help="for MedMNIST-format .npz files: which <split>_images (default test)")
    p.add_argument("--results", type=results_root, default=results_root(),
                   help=f"searched for a key: {RESULTS_HELP}")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    return p.parse_args(argv)


@exits_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    from benchmark.predict import run_prediction

    outcome = run_prediction(args.run, args.images, args.results, out=args.out, split=args.split,
                             batch_size=args.batch_size, device=args.device)
    run = outcome["run"]
    print(f"run: {run.run_dir} ({run.spec.get('name', run.key)}; {run.image_size} px, {run.channels} channel(s), "
          f"classes: {', '.join(run.label_names)})")
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    print(outcome["table"])
    print(f"predictions: {outcome['csv']} ({len(outcome['names'])} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
