"""Image experiment on Fashion-MNIST, preset 'fashion-mnist-cpu' of ``run_image_experiment`` (14×14 box-downsampled
images, a 180k-parameter U-Net; ADPM_FASHION_PRESET=fashion-mnist selects the 28×28 preset meant for a GPU).

Needs the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``; files under
/usr/share/datasets/fashion-mnist, or set the root as ``analytic_dpm.data`` documents). Without it this target writes
images-fashion.NOTE.md explaining how to get it and returns without error. In --fast mode it never trains: it only
checks the data and writes the note.

Full mode: the tables come from the committed run in results/fashion-mnist-cpu when its configuration matches
(seconds); recomputing it (ADPM_PAPER_RERUN=1, or without the committed run) takes about an hour on 2 CPU cores.
The 28×28 preset takes several hours on CPU and well under an hour on one GPU.
"""

from __future__ import annotations

import os

from ._images import run_preset


def run(out_dir, fast: bool = False):
    from analytic_dpm.data import fashion_mnist_available, fashion_mnist_root

    note = out_dir / "images-fashion.NOTE.md"
    if not fashion_mnist_available():
        msg = (f"images-fashion: Fashion-MNIST not found under {fashion_mnist_root()}.\n"
               "Install the Debian package:  sudo apt-get install dataset-fashion-mnist\n"
               "then run:  python -m paper images-fashion   (several hours on CPU; trains a 28×28 U-Net)\n")
        note.write_text(msg)
        print(msg, end="")
        return [note]
    if fast:
        msg = ("images-fashion: data found, but --fast never trains. Run the full target with\n"
               "  python -m paper images-fashion   (renders the committed results/fashion-mnist-cpu run, or about an "
               "hour on 2 CPU cores)\n")
        note.write_text(msg)
        print(msg, end="")
        return [note]
    preset = os.environ.get("ADPM_FASHION_PRESET", "fashion-mnist-cpu")
    return run_preset(out_dir, preset, "images-fashion", "images-fashion")
