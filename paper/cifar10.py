"""The paper's CIFAR10 rows of Tables 1 and 2, from Bao et al.'s pretrained checkpoints (user-supplied; GPU).

Needs, none of which can be downloaded here (the target lists what is missing in cifar10.MISSING.md):
* checkpoints: ``$ADPM_CHECKPOINTS/cifar10/ls/400000.ckpt.pth`` (linear schedule) and/or
  ``$ADPM_CHECKPOINTS/cifar10/cs/160000.ckpt.pth`` (cosine), from the Google Drive link in the official Analytic-DPM
  README (default ``$ADPM_CHECKPOINTS`` = ``checkpoints``); loaded by ``load_pretrained`` without unpickling;
* CIFAR10, binary version, in ``$ANALYTIC_DPM_CIFAR10`` (default ``data/cifar-10-batches-bin``);
* for Table 2 (FID): the pytorch-fid Inception weights ``pt_inception-2015-12-05-6726825d.pth`` named by
  ``$ANALYTIC_DPM_FID_WEIGHTS``; without them only Table 1 is computed.

Size: ``ADPM_PRETRAINED_SIZE=quick`` (default: M = 100, 1000 test images, 1000 samples, K ≤ 100: about 1.4 million
network evaluations per model) or ``paper`` (M = 50000, 10000 test images, 50000 samples, K up to 1000: about 500
million evaluations per model, for which ``torchrun`` with ``analytic_dpm.distributed`` shards the sampling). No GPU
was available to time either; the paper's Table 4 gives 29 ms per batch of 10 on an RTX 2080 Ti for this network.
Everything resumes after an interruption (out/cifar10/<model>/).

Conventions: as the paper's numbers were computed, the decoder uses the official tanh CDF and the even trajectory
the official float rounding (``PretrainedEvalConfig.decoder_cdf = "tanh"``, ``trajectory_rounding = "official"``,
the defaults of ``QUICK_SIZE`` and ``PAPER_SIZE``); the sidecar records both.
"""

from __future__ import annotations

import os
import pathlib
import time

from ._common import fmt, markdown_table, write_csv, write_sidecar

MODELS = {  # name -> (preset, relative checkpoint path, σ₂ clip y of Analytic-DDPM (facts §3.4))
    "ls": ("improved-cifar10-ls", "cifar10/ls/400000.ckpt.pth", 2.0),
    "cs": ("improved-cifar10-cs", "cifar10/cs/160000.ckpt.pth", 1.0),
}
#: P Table 1 (bits/dim) and Table 2 (FID), CIFAR10, K = 10, 25, 50, 100, 200, 400, 1000 (facts §5.3, §5.4)
PAPER_KS = (10, 25, 50, 100, 200, 400, 1000)
PAPER_NLL = {
    "ls": {"ET ddpm-small": (74.95, 24.98, 12.01, 7.08, 5.03, 4.29, 3.73),
           "ET ddpm-large": (6.99, 6.11, 5.44, 4.86, 4.39, 4.07, 3.75),
           "ET analytic-ddpm": (5.47, 4.79, 4.38, 4.07, 3.84, 3.71, 3.59),
           "OT ddpm-large": (5.38, 4.34, 3.97, 3.82, 3.77, 3.75, 3.75),
           "OT analytic-ddpm": (4.11, 3.68, 3.61, 3.59, 3.59, 3.59, 3.59)},
    "cs": {"ET ddpm-small": (75.96, 24.94, 11.96, 7.04, 4.95, 4.19, 3.60),
           "ET ddpm-large": (6.51, 5.55, 4.92, 4.41, 4.03, 3.78, 3.54),
           "ET analytic-ddpm": (5.08, 4.45, 4.09, 3.83, 3.64, 3.53, 3.42),
           "OT ddpm-large": (5.51, 4.30, 3.86, 3.65, 3.57, 3.54, 3.54),
           "OT analytic-ddpm": (3.99, 3.56, 3.47, 3.44, 3.43, 3.42, 3.42)},
}
PAPER_FID = {
    "ls": {"ddpm-small": (44.45, 21.83, 15.21, 10.94, 8.23, 6.43, 5.11),
           "ddpm-large": (233.41, 125.05, 66.28, 31.36, 12.96, 4.86, 3.04),
           "analytic-ddpm": (34.26, 11.60, 7.25, 5.40, 4.01, 3.62, 4.03),
           "ddim": (21.31, 10.70, 7.74, 6.08, 5.07, 4.61, 4.13),
           "analytic-ddim": (14.00, 5.81, 4.04, 3.55, 3.39, 3.50, 3.74)},
    "cs": {"ddpm-small": (34.76, 16.18, 11.11, 8.38, 6.66, 5.65, 4.92),
           "ddpm-large": (205.31, 84.71, 37.35, 14.81, 5.74, 3.40, 3.34),
           "analytic-ddpm": (22.94, 8.50, 5.50, 4.45, 4.04, 3.96, 4.31),
           "ddim": (34.34, 16.68, 10.48, 7.94, 6.69, 5.78, 4.89),
           "analytic-ddim": (26.43, 9.96, 6.02, 4.88, 4.92, 5.00, 4.66)},
}


def inputs() -> dict:
    """What the target needs and whether it is there: {key: (path, present, how to get it)}."""
    from analytic_dpm.data import CIFAR10_FILES, cifar10_root
    from analytic_dpm.metrics.inception import FID_WEIGHTS_ENV, FID_WEIGHTS_FILENAME

    ck = pathlib.Path(os.environ.get("ADPM_CHECKPOINTS", "checkpoints"))
    root = cifar10_root()
    out = {}
    for name, (preset, rel, _) in MODELS.items():
        out[f"checkpoint {name}"] = (ck / rel, (ck / rel).exists(),
                                     f"Bao et al.'s CIFAR10 ({name.upper()}) checkpoint, Google Drive link in the "
                                     "official Analytic-DPM README; put it at this path (or set ADPM_CHECKPOINTS)")
    files = [root / f for f in CIFAR10_FILES["train"] + CIFAR10_FILES["test"]]
    out["cifar10"] = (root, all(f.exists() for f in files),
                      "CIFAR10 binary version (cifar-10-binary.tar.gz, University of Toronto CIFAR page), unpacked; "
                      "set ANALYTIC_DPM_CIFAR10 to its cifar-10-batches-bin directory")
    w = os.environ.get(FID_WEIGHTS_ENV)
    out["inception"] = (pathlib.Path(w) if w else pathlib.Path(FID_WEIGHTS_FILENAME), bool(w) and pathlib.Path(w).exists(),
                        f"pytorch-fid's Inception weights {FID_WEIGHTS_FILENAME} (its GitHub release); set "
                        f"{FID_WEIGHTS_ENV} to the file. Only Table 2 needs it")
    return out


def _missing_note(out_dir, need) -> pathlib.Path:
    lines = ["# cifar10: the paper's CIFAR10 tables from pretrained checkpoints\n",
             "This target runs only with files that cannot be downloaded here. Status:\n"]
    lines += [f"- {'found' if ok else 'MISSING'}: {k}: `{p}`" + ("" if ok else f" ({how})") for k, (p, ok, how) in
              need.items()]
    lines.append("\nThen run (on a GPU): `ADPM_PRETRAINED_SIZE=quick python -m paper cifar10` "
                 "(or `=paper` for the full protocol). See the README section on pretrained models.\n")
    path = out_dir / "cifar10.MISSING.md"
    path.write_text("\n".join(lines))
    return path


def run(out_dir, fast: bool = False):
    need = inputs()
    models = [m for m in MODELS if need[f"checkpoint {m}"][1]]
    if fast or not models or not need["cifar10"][1]:
        path = _missing_note(out_dir, need)
        print(path.read_text(), end="")
        return [path]
    import torch

    from analytic_dpm.data import load_cifar10
    from analytic_dpm.metrics import load_fid_inception
    from analytic_dpm.models import load_pretrained
    from analytic_dpm.pretrained_eval import PAPER_SIZE, QUICK_SIZE, evaluate_pretrained

    t0 = time.perf_counter()
    size = os.environ.get("ADPM_PRETRAINED_SIZE", "quick")
    if size not in ("quick", "paper"):
        raise ValueError(f"ADPM_PRETRAINED_SIZE must be 'quick' or 'paper'; got {size!r}.")
    cfg = QUICK_SIZE if size == "quick" else PAPER_SIZE
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, test = load_cifar10("train").images, load_cifar10("test").images
    extractor = load_fid_inception(device=device) if need["inception"][1] else None
    rows, md = [], [f"# CIFAR10 from the pretrained checkpoints ({size} size; paper values in brackets)\n\n"]
    for m in models:
        preset, _, y = MODELS[m]
        eps = load_pretrained(preset, need[f"checkpoint {m}"][0], device=device, batch_size=cfg.batch_size)
        res = evaluate_pretrained(eps, eps.schedule, train, test, out_dir / "cifar10" / m, cfg, extractor=extractor,
                                  clip_sigma_pixel={"analytic-ddpm": y, "residual-ddpm": y}, device=device)
        for title, table, paper in (("bits/dim", res.nll_bits_per_dim, PAPER_NLL[m]),
                                    (res.metric_name or "FD", res.fd, PAPER_FID[m])):
            if not table:
                continue
            md.append(f"## CIFAR10 ({m.upper()}), {title}\n\n")
            body = []
            for label, d in table.items():
                ref = dict(zip(PAPER_KS, paper.get(label, ())))
                body.append([label] + [f"{fmt(d[K], 2)} [{ref.get(K, '—')}]" for K in cfg.Ks])
                rows += [[m, title, label, K, d[K], ref.get(K)] for K in cfg.Ks]
            md.append(markdown_table(["row"] + [f"K={K}" for K in cfg.Ks], body) + "\n")
    csv_path = write_csv(out_dir / "cifar10.csv", ["model", "quantity", "row", "K", "ours", "paper"], rows)
    md_path = out_dir / "cifar10.md"
    md_path.write_text("".join(md))
    for p in (csv_path, md_path):
        write_sidecar(p, {"size": size, **cfg.to_dict(), "models": models}, seeds=[cfg.seed], started=t0)
    return [csv_path, md_path]
