"""Write a tiny random class-conditional diffusers pipeline (DDIMPipeline: UNet2DModel with class embeddings) to a
folder, for the pipeline generator's smoke runs on a machine with no network:

    python launch/make_tiny_pipeline.py --out /tmp/tiny_pipeline          # BreastMNIST's 2 classes, 1 x 28 x 28
    export GENMED_PIPELINE_DIR=/tmp/tiny_pipeline
    python launch/grid.py --grid rare_sweep --profile generators_smoke

The weights are random (seeded): its images are noise, which exercises the generator stage, never a result.
"""

import argparse
import sys
from pathlib import Path

from benchmark.core.errors import UserError, exits_on_user_error


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path,
                   help="folder to write (created; an existing pipeline is replaced)")
    p.add_argument("--classes", type=int, default=2, help="dataset classes (default 2; the UNet gets one more, the "
                                                          "'no class' label)")
    p.add_argument("--image-size", type=int, default=28, help="image side in px (even; default 28)")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="image channels (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    return p.parse_args(argv)


@exits_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    from benchmark.generators.pipeline import INDEX
    from benchmark.generators.tiny_pipeline import write_tiny_class_pipeline

    out = args.out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INDEX).is_file())):
        raise UserError(f"--out {out} exists and is not a pipeline folder; choose a new or empty folder.")
    if args.classes < 1 or args.image_size < 2 or args.image_size % 2:
        raise UserError(f"--classes must be ≥ 1 and --image-size even and ≥ 2, got {args.classes} and "
                        f"{args.image_size}.")
    write_tiny_class_pipeline(out, num_classes=args.classes, image_size=args.image_size, channels=args.channels,
                              seed=args.seed)
    print(f"wrote a tiny random class-conditional pipeline ({args.classes} classes + 'no class' label "
          f"{args.classes}, {args.channels} x {args.image_size} x {args.image_size}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
