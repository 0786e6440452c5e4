"""Fine-tuning: data, quality checks, full/LoRA/QLoRA training, hyper-parameter search, outputs.

``kubellm train`` (:mod:`~kubellm.runtime.training.command`) runs
:func:`kubellm.runtime.training.pipeline.run_job`: read the dataset
(:mod:`~kubellm.runtime.training.data`), check and filter it
(:mod:`~kubellm.runtime.training.quality`), tokenize with prompt masking
(:mod:`~kubellm.runtime.training.encoding`), optionally search hyper-parameters with optuna
(:mod:`~kubellm.runtime.training.search`), train with transformers' Trainer, resuming from
checkpoints (:mod:`~kubellm.runtime.training.trainer`, :mod:`~kubellm.runtime.training.methods`),
report progress (:mod:`~kubellm.runtime.training.progress`) and write the outputs
(:mod:`~kubellm.runtime.training.outputs`; layout in :mod:`kubellm.runtime.models.layout`).

Nothing is imported here, so the command parses its config before torch loads.
"""
