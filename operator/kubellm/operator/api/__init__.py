"""The public API of kubellm: the kubellm.io/v1alpha1 custom resources.

One module per kind (:mod:`.finetunejob`, :mod:`.modeldeployment`, :mod:`.promptexperiment`)
with its typed spec and status, names and condition reasons; :mod:`.common` holds what they
share and :mod:`.crdgen` turns them into CustomResourceDefinitions (``crds/``).

Layering: this package imports nothing internal except :mod:`kubellm.contract`, whose
models the specs embed.
"""

from __future__ import annotations

from kubellm.operator.api import finetunejob, modeldeployment, promptexperiment
from kubellm.operator.api.common import API_VERSION, CATEGORY, GROUP, VERSION, KindInfo
from kubellm.operator.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from kubellm.operator.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from kubellm.operator.api.promptexperiment import PromptExperimentSpec, PromptExperimentStatus

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "KINDS",
    "VERSION",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "KindInfo",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "PromptExperimentSpec",
    "PromptExperimentStatus",
    "finetunejob",
    "modeldeployment",
    "promptexperiment",
]

KINDS: tuple[KindInfo, ...] = (finetunejob.INFO, modeldeployment.INFO, promptexperiment.INFO)
"""The three kinds, in the order the CRDs are generated and documented."""
