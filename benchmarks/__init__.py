"""kubellm's benchmarks, side by side with their peers; ``python -m benchmarks`` runs them all.

Not tests: pytest never collects this folder. Each family module has ``run(options) ->
FamilyResult``; :mod:`benchmarks.__main__` runs the chosen ones and :mod:`benchmarks.report`
writes ``benchmarks/results/``.
"""
