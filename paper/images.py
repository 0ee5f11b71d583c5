"""Image experiment (P Tables 1–2 on real images, small scale): train a small U-Net on the 8×8 digits, estimate Γ,
and report the bound (bits/dim) and FD-LeNet for the methods and K (``analytic_dpm.pipeline.run_image_experiment``).
Writes out/images/ (the pipeline's own outputs) and out/images.csv, out/images.md with sidecars.

Full mode: preset 'digits'; expected wall time about 15–30 min on 2 CPU cores (training dominates; resumable).
Fast mode: skipped (writes images.SKIPPED.md) unless ADPM_PAPER_IMAGES=1, then preset 'digits-ci' (a couple of
minutes), so that the test suite stays fast.
"""

from __future__ import annotations

import os

from ._images import run_preset

ENV = "ADPM_PAPER_IMAGES"


def run(out_dir, fast: bool = False):
    if fast and os.environ.get(ENV) != "1":
        note = out_dir / "images.SKIPPED.md"
        msg = (f"images: skipped in --fast mode (it trains a network: minutes). Run it with\n"
               f"  {ENV}=1 python -m paper images --fast   (preset 'digits-ci', a couple of minutes)\n"
               f"  python -m paper images                  (preset 'digits', the full run)\n")
        note.write_text(msg)
        print(msg, end="")
        return [note]
    return run_preset(out_dir, "digits-ci" if fast else "digits", "images", "images")
