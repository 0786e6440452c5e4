"""Model sources shared by training and serving: URIs, loading, dummy models, tokenizers, quantization.

- :mod:`~kubellm.runtime.models.sources`: parsing ``hf://``, ``file://``, ``pvc://``, ``pkg://``, paths
  and ``dummy://`` URIs (no heavy imports), and :class:`ModelSourceError`;
- :mod:`~kubellm.runtime.models.loading`: :func:`load_model` / :func:`load_tokenizer` for any source;
- :mod:`~kubellm.runtime.models.gguf`: ``.gguf`` files converted once into a cached model folder;
- :mod:`~kubellm.runtime.models.dummy` and :mod:`~kubellm.runtime.models.tokenizer`: random-weight
  models of real architectures with a real byte-level tokenizer, built offline;
- :mod:`~kubellm.runtime.models.hub`: Hub failures as one-line errors;
- :mod:`~kubellm.runtime.models.quantization`: 4-bit weights for QLoRA;
- :mod:`~kubellm.runtime.models.layout`: the training output folder a server loads.

Nothing is imported here, so ``kubellm.runtime.models.sources`` stays cheap to import.
"""
