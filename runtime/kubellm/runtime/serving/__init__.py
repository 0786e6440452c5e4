"""The inference server behind ``kubellm serve``: an OpenAI-compatible API over one model.

- :mod:`.settings`: the one settings object (config file, environment, flags);
- :mod:`.engine`: loading (LoRA adapters) and the forward passes; no HTTP here;
- :mod:`.quantize`: ``none | fp16 | bf16 | int8 | int4`` and the weight bytes they leave;
- :mod:`.batching`: the :class:`~.batching.Batch` type and the iteration-level scheduler;
- :mod:`.sampling`: per-row greedy / temperature / top-p sampling with per-request seeds;
- :mod:`.cache`: the exact-match response cache (Redis, or in-process) and its keys;
- :mod:`.metrics`: every Prometheus metric the server exports;
- :mod:`.service`: validation, cache look-up, admission and gathering of a request's tokens;
- :mod:`.protocol`, :mod:`.routes`, :mod:`.state`, :mod:`.app`: request shapes, endpoints, error mapping;
- :mod:`.errors`: domain errors (mapped to HTTP statuses in :mod:`.app` only); :mod:`.logs`: JSON logs;
- :mod:`.command`: the ``kubellm serve`` command line.

Nothing is imported here, so importing one piece never loads torch or FastAPI by accident.
"""
