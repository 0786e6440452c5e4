"""Pure builders: (custom resource) -> the desired child objects, as dicts for server-side apply.

One module per kind (:mod:`.finetunejob`, :mod:`.modeldeployment`, :mod:`.promptexperiment`),
:mod:`.common` for what pods share and :mod:`.reporting` for the runtime's report channel.
They import only :mod:`kubellm.operator.api`; they never talk to the API server.
"""

from __future__ import annotations

from kubellm.operator.manifests import common, finetunejob, modeldeployment, promptexperiment, reporting

__all__ = ["common", "finetunejob", "modeldeployment", "promptexperiment", "reporting"]
