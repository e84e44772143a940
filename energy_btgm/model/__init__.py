"""The generative model of group weekly curves: the second layer of the pipeline.

``model`` owns the residual VAE, its scaler and the ``Generator`` that turns latents into curves in
kW (``vae``), training with checkpoints and the second-stage latent prior (``train``), the model
card that holds generated curves against the test weeks (``card``) and banks of curves drawn from p
(``sample``). It may import ``data`` (to read curves) and the base modules (``store``, ``bank``,
``validation``, ``core``, ``criteria``); never ``tuning``, ``estimate``, ``outputs`` or the CLI.
"""
