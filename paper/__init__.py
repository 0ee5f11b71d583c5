"""Regenerate the paper's figures and tables: ``python -m paper [targets] [--fast] [--out DIR]``.

Every target writes its outputs into ``paper/out/`` (or ``--out``) together with a sidecar JSON recording the
commit, configuration, seeds, package versions, device and wall time.
"""
