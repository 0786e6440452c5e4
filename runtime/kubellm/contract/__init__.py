"""The contract between the operator and the runtime pods: spec sections, run documents and reports.

See :mod:`kubellm.contract.schema`. The operator (``kubellm.operator``) and the runtime
(``kubellm.runtime``) import this package and never each other.
"""
