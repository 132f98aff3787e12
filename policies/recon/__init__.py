"""Data, training and evaluation of the reconstruction model (:mod:`perception.recon`, issue 18).

:mod:`~policies.recon.data` (the twin's scene shards as tensors, training batches of k input and 2 query views),
:mod:`~policies.recon.train` (the training loop, checkpoints, resume), :mod:`~policies.recon.evaluate` (held-out
depth AbsRel / PSNR / Chamfer at 2-16 input views for the TTT model, its frozen ablation and TSDF fusion) and
:mod:`~policies.recon.run_config` (the scripts' schemas). The scenes themselves are rendered by
:mod:`sim.recon_scenes`; this package only reads the shards it writes.
"""
