#!/usr/bin/env python3
"""Writes fixtures/digits_train.npz and fixtures/digits_test.npz (the data of the README's first
command) from the handwritten-digits set that the scikit-learn wheel ships
(sklearn/datasets/data/digits.csv.gz; scikit-learn is BSD-3-Clause; the data is the UCI
"Optical Recognition of Handwritten Digits" test set, E. Alpaydin and C. Kaynak, CC BY 4.0).

    python3 tools/make_digits_fixture.py

Deterministic arrays (the npz zip headers carry a time stamp): 1,797 8x8 images with 17 grey levels (0..16), scaled by 16 to 0..255 (256 clipped
to 255) as uint8 [N, 8, 8], labels uint8 [N]; a seeded shuffle puts 1,297 in train and 500 in
test. Only the registry (PyPI) is used; nothing else is downloaded.
"""
import glob
import gzip
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

SKLEARN = "scikit-learn==1.6.1"


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(root, "fixtures")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
             SKLEARN, "-d", tmp],
            check=True,
        )
        whl = glob.glob(os.path.join(tmp, "scikit_learn-*.whl"))[0]
        with zipfile.ZipFile(whl) as z:
            raw = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz"))
    a = np.loadtxt(io.BytesIO(raw), delimiter=",")
    x = np.minimum(a[:, :64] * 16, 255).astype(np.uint8).reshape(-1, 8, 8)
    y = a[:, 64].astype(np.uint8)
    idx = np.random.RandomState(0).permutation(len(y))
    tr, te = idx[:1297], idx[1297:]
    for name, sel in (("digits_train.npz", tr), ("digits_test.npz", te)):
        path = os.path.join(out, name)
        # np.savez adds no timestamps in npz members beyond the zip defaults; write atomically.
        with open(path + ".part", "wb") as f:
            np.savez_compressed(f, x=x[sel], y=y[sel])
        os.replace(path + ".part", path)
        print(f"wrote {path}: {len(sel)} images")


if __name__ == "__main__":
    main()
