"""Image experiment on Fashion-MNIST (28×28), preset 'fashion-mnist' of ``run_image_experiment``.

Needs the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``; files under
/usr/share/datasets/fashion-mnist, or set the root as ``analytic_dpm.data`` documents). Without it this target writes
images-fashion.NOTE.md explaining how to get it and returns without error. In --fast mode it never trains: it only
checks the data and writes the note.

Full mode: expected wall time several hours on 2 CPU cores (6000 training steps of a 28×28 U-Net, Γ over N = 1000,
samples up to K = 1000); well under an hour on one GPU.
"""

from __future__ import annotations

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
               "  python -m paper images-fashion   (several hours on CPU)\n")
        note.write_text(msg)
        print(msg, end="")
        return [note]
    return run_preset(out_dir, "fashion-mnist", "images-fashion", "images-fashion")
