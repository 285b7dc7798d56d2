"""Transcoding on retrieve: how fast one core makes each transfer syntax from a CT slice.

For every syntax the archive produces (vna.dicom.transcode.PRODUCIBLE), from native slices
(the usual stored form) and from JPEG-LS and JPEG 2000 slices (decoding first): megabytes of
pixel data per second through the pure transcoding (one thread, no I/O), and the size made.
A measurement, not a test: it prints figures, nothing fails because one is low.

    .venv/bin/python bench/transcoding.py            # 512 x 512 phantom CT, 20 slices
    .venv/bin/python bench/transcoding.py --size 256 --slices 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

from tests.factory import part10  # noqa: E402
from tests.phantom import smooth_ct_study  # noqa: E402
from vna.dicom import transcode as tc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="rows and columns of a slice")
    parser.add_argument("--slices", type=int, default=20, help="slices per source syntax")
    args = parser.parse_args()

    study = smooth_ct_study(series=1, slices=args.slices, size=args.size)
    native = [part10(ds) for ds in study]
    pixel_mb = args.slices * args.size * args.size * 2 / 1e6
    sources = {"native (Explicit VR LE)": native}
    for name, syntax in (("JPEG-LS", tc.JPEG_LS_LOSSLESS), ("JPEG 2000", tc.J2K_LOSSLESS)):
        sources[name] = [tc.transcode(data, syntax) for data in native]

    print(f"{args.slices} CT slices of {args.size} x {args.size}, 16 bits: {pixel_mb:.1f} MB")
    print(f"{'from':<24} {'to':<40} {'MB/s':>8} {'ratio':>7}")
    for source, files in sources.items():
        for target in tc.PRODUCIBLE:
            start = time.perf_counter()
            made = [tc.transcode(data, target) for data in files]
            seconds = time.perf_counter() - start
            size = sum(len(m) for m in made)
            original = sum(len(d) for d in native)
            name = tc.syntax_name(target).split(" (", 1)[-1].rstrip(")")
            print(
                f"{source:<24} {name[:40]:<40} {pixel_mb / seconds:>8.1f} {original / size:>7.2f}"
            )


if __name__ == "__main__":
    main()
