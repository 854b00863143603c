"""Write scikit-learn's handwritten digits as an image folder (``OUT/<digit>/<n>.png``), so that
``harness run vision --tasks image_folder --data-dir OUT --task-opt image_size=N`` trains on real
images of any size on a machine with no dataset and no internet (the GPU check's large-input run).

    python3 scripts/digits_folder.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main(out: Path) -> None:
    digits = load_digits()
    for n, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.uint8(image * 255 / 16)).save(folder / f"{n:04d}.png")  # 0..16 -> 0..255
    print(f"wrote {len(digits.images)} images in {len(set(digits.target))} class folders under {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 scripts/digits_folder.py OUT")
    main(Path(sys.argv[1]))
