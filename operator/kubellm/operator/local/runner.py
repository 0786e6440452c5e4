"""Running validated manifests locally: FineTuneJobs, then ModelDeployments, then PromptExperiments.

Each resource goes through what the operator does for it: its references are resolved by the
handlers' own resolvers (reading the objects run so far instead of the API server), its
children come from the operator's builders, its pod runs as a :class:`LocalPod`, and its
status is computed by :mod:`kubellm.operator.status` from the pod's state and its report
folder and printed like ``kubectl get -w``. Servers keep running until the experiments that
use them are done (or until Ctrl-C with ``keep_serving``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, cast

from kubellm.contract.training import TaskEvaluationReport
from kubellm.operator.api import finetunejob as ftj
from kubellm.operator.api import modeldeployment as mdep
from kubellm.operator.api import promptexperiment as pexp
from kubellm.operator.api.common import API_VERSION, StatusBase
from kubellm.operator.handlers.common import Operator
from kubellm.operator.handlers.finetunejob import augmentation_endpoint, output_status
from kubellm.operator.handlers.modeldeployment import NotResolvedError, resolve_model
from kubellm.operator.handlers.promptexperiment import resolve_judges, resolve_target
from kubellm.operator.handlers.servers import ServerNotReadyError
from kubellm.operator.local import columns
from kubellm.operator.local.documents import KINDS, ManifestSet, Resource
from kubellm.operator.local.pods import LocalPod, PodError, WorkFolder
from kubellm.operator.manifests import finetunejob as ftj_manifests
from kubellm.operator.manifests import modeldeployment as mdep_manifests
from kubellm.operator.manifests import promptexperiment as pexp_manifests
from kubellm.operator.manifests.reporting import REPORT_MARKDOWN_KEY, report_name
from kubellm.operator.status import (
    DeploymentView,
    finetunejob_status,
    modeldeployment_status,
    now,
    promptexperiment_status,
)

__all__ = ["LOCAL_IMAGE", "LocalRun", "RunFailedError"]

LOCAL_IMAGE = "kubellm-runtime:local"
"""The image the builders name; locally the installed ``kubellm`` runs instead."""
POLL_SECONDS = 0.5
TRY_PROMPT = "What is the capital of France?"
TRY_PROMPT_ANNOTATION = "kubellm.io/try-prompt"
"""A ModelDeployment annotation: the prompt ``kubellm run`` sends to try the server (default TRY_PROMPT)."""


class RunFailedError(Exception):
    """A resource failed; the message says which and why."""


@dataclass
class LocalStore:
    """What the handlers' resolvers would read from the API server: the objects run so far."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object with its latest status, or None."""
        return self.objects.get((kind, namespace, name))

    def put(self, resource: Resource, status: StatusBase) -> None:
        """Record a resource's latest status."""
        self.objects[resource.kind, resource.namespace, resource.name] = {**resource.body, "status": status.dump()}


@dataclass(frozen=True)
class _LocalOperator:
    """The part of the operator the resolvers use (``op.kube.get``)."""

    kube: LocalStore


@dataclass(frozen=True)
class Server:
    """A running local ModelDeployment."""

    pod: LocalPod
    url: str
    model: str
    api_key: str | None


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def job_view(name: str, started: datetime, exit_code: int | None, log: Path) -> dict[str, Any]:
    """The Job object a local pod stands for, as the status functions read it."""
    status: dict[str, Any] = {"startTime": _iso(started)}
    if exit_code is None:
        status["active"] = 1
    elif exit_code == 0:
        status.update(succeeded=1, completionTime=_iso(now()), conditions=[{"type": "Complete", "status": "True"}])
    else:
        message = f"the pod exited with code {exit_code}; its log: {log}"
        status.update(
            failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "PodFailed", "message": message}]
        )
    return {"metadata": {"name": name}, "status": status}


def deployment_view(ready: bool) -> dict[str, Any]:
    """The Deployment object a local server stands for (one replica)."""
    status = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": int(ready)}
    return {"metadata": {"generation": 1}, "status": status}


def http(
    url: str, body: Mapping[str, Any] | None = None, api_key: str | None = None
) -> tuple[int, dict[str, str], str]:
    """(status, headers, text) of a GET, or a POST of ``body`` as JSON; status 0 when unreachable."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, {}, ""


class Printer:
    """Writes progress the way ``kubectl get -w`` does: a header per resource, a row per change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last: dict[tuple[str, str], list[str]] = {}
        self._widths: dict[tuple[str, str], list[int]] = {}

    def line(self, text: str = "") -> None:
        """One line of output."""
        print(text, file=self.out, flush=True)

    def status(self, resource: Resource, created: datetime, status: StatusBase) -> None:
        """A row when anything but the age changed (the header before the first)."""
        info = KINDS[resource.kind]
        body = _with_status(resource, created, status)
        row = columns.row(info, body, now())
        key = (resource.kind, resource.name)
        if key not in self._widths:
            header = columns.header(info)
            self._widths[key] = [max(len(h), len(c)) + 2 for h, c in zip(header, row, strict=True)]
            self.line(columns.format_table([header], self._widths[key])[0])
        if self._last.get(key, [])[:-1] != row[:-1]:
            widths = [max(w, len(c)) for w, c in zip(self._widths[key], row, strict=True)]
            self.line(columns.format_table([row], widths)[0])
        self._last[key] = row


def _with_status(resource: Resource, created: datetime, status: StatusBase) -> dict[str, Any]:
    metadata = {**resource.body["metadata"], "creationTimestamp": _iso(created)}
    return {**resource.body, "metadata": metadata, "status": status.dump()}


@dataclass
class LocalRun:
    """Runs a :class:`ManifestSet` in dependency order and prints what happens."""

    manifests: ManifestSet
    work: WorkFolder
    out: TextIO
    keep_serving: bool = False
    store: LocalStore = field(default_factory=LocalStore)
    servers: dict[tuple[str, str], Server] = field(default_factory=dict)
    finished: list[tuple[Resource, datetime, StatusBase]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.printer = Printer(self.out)
        self.operator = cast(Operator, _LocalOperator(self.store))

    def run(self) -> None:
        """Everything, in order; :class:`RunFailedError` at the first failure. Servers are stopped at the end."""
        steps: dict[str, Callable[[Resource], None]] = {
            ftj.KIND: self.train,
            mdep.KIND: self.serve,
            pexp.KIND: self.experiment,
        }
        try:
            for resource in self.manifests.resources:
                self.printer.line()
                steps[resource.kind](resource)
            self.summary()
            if self.keep_serving and self.servers:
                self.wait_while_serving()
        finally:
            for server in self.servers.values():
                server.pod.stop()

    # --- FineTuneJob ------------------------------------------------------------------------------

    def train(self, resource: Resource) -> None:
        """Run the training Job's pod to the end, showing status and the data-quality report."""
        owner, spec = resource.owner, resource.spec
        children = ftj_manifests.build_children(owner, spec, LOCAL_IMAGE, self._augmentation(resource))
        pod = self._pod(resource, children[0]["data"], children[-1]["spec"]["template"]["spec"])
        self.printer.line(f"finetunejob.kubellm.io/{resource.name} created (pod log: {pod.log_file})")
        shown: dict[str, Any] = {}

        def status_of(job: dict[str, Any], report: Mapping[str, str], previous: StatusBase) -> StatusBase:
            status = finetunejob_status(
                cast(ftj.FineTuneJobStatus, previous),
                1,
                job=job,
                report_data=report,
                output=output_status(owner, spec),
                at=now(),
            )
            self._training_notes(status, shown)
            return status

        status = self._watch(resource, pod, ftj.FineTuneJobStatus(), status_of)
        final = cast(ftj.FineTuneJobStatus, status)
        if final.phase != "Succeeded":
            raise RunFailedError(self._failure(resource, final, pod))
        progress = final.progress
        if progress is not None and progress.initial_eval_loss is not None and progress.eval_loss is not None:
            self.printer.line(f"  eval loss {progress.initial_eval_loss:.4f} -> {progress.eval_loss:.4f}")
        elif shown.get("first_loss") is not None and progress is not None and progress.loss is not None:
            self.printer.line(f"  training loss {shown['first_loss']:.4f} -> {progress.loss:.4f}")
        self._task_scores(final.evaluation)
        if final.output is not None:
            self.printer.line(f"  output: {final.output.uri} ({final.output.kind}) in {self.work.pvc_root}")

    def _task_scores(self, evaluation: TaskEvaluationReport | None) -> None:
        """``task score (exact, 32 held-out rows): 0.062 -> 0.969``, plus answers cut off, when any."""
        if evaluation is None or evaluation.before is None or evaluation.after is None:
            return
        before, after = evaluation.before, evaluation.after
        self.printer.line(
            f"  task score ({evaluation.scorer}, {evaluation.rows} held-out rows): "
            f"{before.score:.3f} -> {after.score:.3f}  ({before.correct} -> {after.correct} correct)"
        )
        if before.truncated or after.truncated:
            self.printer.line(f"  answers cut off by maxNewTokens: {before.truncated} before, {after.truncated} after")

    def _augmentation(self, resource: Resource) -> ftj_manifests.AugmentationEndpoint | None:
        """The local server of the ModelDeployment that augments the data (it runs before the FineTuneJob)."""
        try:
            endpoint = augmentation_endpoint(self.operator, resource.owner, resource.spec, need_ready=True)
        except ServerNotReadyError as error:
            raise RunFailedError(f"FineTuneJob {resource.name}: {error}") from error
        if endpoint is None:
            return None
        ref = resource.spec.data_augmentation.model_deployment_ref
        url = f"{self.servers[resource.namespace, ref.name].url}/v1"  # the Service, locally
        local = endpoint.server.model_copy(update={"url": url})
        return replace(endpoint, server=local)

    def _training_notes(self, status: ftj.FineTuneJobStatus, shown: dict[str, Any]) -> None:
        quality = status.data_quality
        if quality is not None and "quality" not in shown:
            shown["quality"] = True
            verdict = "passed" if quality.passed else "FAILED"
            self.printer.line(
                f"  data quality {verdict}: {quality.rows} rows read, {quality.kept} kept "
                f"({quality.duplicates} duplicates, {quality.empty} empty, {quality.too_short} too short, "
                f"{quality.too_long} too long){': ' + quality.message if quality.message else ''}"
            )
        augmentation = quality.augmentation if quality is not None else None
        if augmentation is not None and "augmentation" not in shown:
            shown["augmentation"] = True
            self.printer.line(
                f"  data augmentation: {augmentation.requested} rows asked of {augmentation.model}, "
                f"{augmentation.kept} kept ({augmentation.duplicates} duplicates, {augmentation.failed_checks} "
                f"failed the checks, {augmentation.invalid} unreadable, {augmentation.failed} failed requests)"
            )
        if status.progress is not None and status.progress.loss is not None:
            shown.setdefault("first_loss", status.progress.loss)

    # --- ModelDeployment --------------------------------------------------------------------------

    def serve(self, resource: Resource) -> None:
        """Start the server pod, wait until /ready answers, then try it once (and once more from the cache)."""
        owner, spec = resource.owner, cast(mdep.ModelDeploymentSpec, resource.spec)
        try:
            model = resolve_model(self.operator, owner, spec)
        except NotResolvedError as error:
            raise RunFailedError(f"ModelDeployment {resource.name}: {error}") from error
        children = mdep_manifests.build_children(owner, spec, model, LOCAL_IMAGE)
        port = free_port()
        pod = self._pod(
            resource,
            children[0]["data"],
            children[1]["spec"]["template"]["spec"],
            ("--host", "127.0.0.1", "--port", str(port)),
        )
        url = f"http://127.0.0.1:{port}"
        self.printer.line(f"modeldeployment.kubellm.io/{resource.name} created (pod log: {pod.log_file})")
        if spec.replicas != 1 or spec.autoscaling is not None:
            self.printer.line("  locally one replica serves; replicas and autoscaling apply on a cluster")
        view = DeploymentView(
            model=model.uri,
            served_models=mdep_manifests.served_model_names(owner, spec, model),
            url=f"{url}/v1",
            selector=mdep_manifests.selector(owner),
            deployment_name=owner.child_name(),
            service_name=owner.child_name(),
            desired_replicas=1,
        )
        api_key = self._secret(resource.namespace, spec.api_key_secret_ref)
        server = Server(pod=pod, url=url, model=mdep_manifests.served_model_name(owner, spec), api_key=api_key)
        self.servers[resource.namespace, resource.name] = server
        status = self._wait_ready(resource, server, view, spec.startup_timeout_seconds)
        self.store.put(resource, status)
        prompt = resource.body["metadata"].get("annotations", {}).get(TRY_PROMPT_ANNOTATION) or TRY_PROMPT
        base_name = mdep_manifests.base_model_name(owner, spec, model)
        dummy = model.uri.startswith("dummy://") or (model.base_uri or "").startswith("dummy:")
        self.try_server(server, prompt, dummy=dummy, base_name=base_name)

    def _wait_ready(
        self, resource: Resource, server: Server, view: DeploymentView, timeout: float
    ) -> mdep.ModelDeploymentStatus:
        created = now()
        deadline = time.monotonic() + timeout
        status = mdep.ModelDeploymentStatus()
        while True:
            code = server.pod.poll()
            ready = code is None and http(f"{server.url}/ready")[0] == 200
            problem = ("CrashLoopBackOff", f"the server exited with code {code}") if code is not None else None
            status = modeldeployment_status(
                status, 1, deployment=deployment_view(ready), view=view, problem=problem, at=now()
            )
            self.printer.status(resource, created, status)
            if ready:
                self.finished.append((resource, created, status))
                return status
            if code is not None or time.monotonic() > deadline:
                reason = "it exited" if code is not None else f"not ready after {timeout:.0f}s (startupTimeoutSeconds)"
                raise RunFailedError(self._failure(resource, status, server.pod, reason))
            time.sleep(POLL_SECONDS)

    def try_server(self, server: Server, prompt: str, *, dummy: bool, base_name: str | None = None) -> None:
        """One deterministic chat request, repeated: the answer, the latency and the cache verdict of each.

        A fine-tuned adapter's plain base model (``base_name``) gets the same prompt once, to compare.
        """
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 32,
            "temperature": 0,
        }
        self.printer.line(f"  OpenAI-compatible API at {server.url}/v1 (model {server.model!r}); trying it:")
        self.printer.line(f"    curl {server.url}/v1/chat/completions -H 'Content-Type: application/json' \\")
        self.printer.line(f"      -d '{json.dumps(body)}'")
        for attempt in (1, 2):
            started = time.perf_counter()
            code, headers, text = http(f"{server.url}/v1/chat/completions", body, server.api_key)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if code != 200:
                raise RunFailedError(f"the server at {server.url} answered HTTP {code}: {text[:300]}")
            answer = json.loads(text)
            content = answer["choices"][0]["message"]["content"]
            cache = {k.lower(): v for k, v in headers.items()}.get("x-kubellm-cache", "?")
            self.printer.line(
                f"    request {attempt}: HTTP {code} in {elapsed_ms:.0f} ms, x-kubellm-cache: {cache}, "
                f"{answer['usage']['completion_tokens']} tokens: {content!r}"
            )
        if base_name is not None:
            code, _, text = http(f"{server.url}/v1/chat/completions", {**body, "model": base_name}, server.api_key)
            answer = json.loads(text)["choices"][0]["message"]["content"] if code == 200 else f"HTTP {code}"
            self.printer.line(f"    the base model before fine-tuning ({base_name!r}): {answer!r}")
        if dummy:
            self.printer.line("    (a dummy:// model has random weights: its answers are noise, but real tokens)")
        self.printer.line(f"  metrics: {server.url}/metrics ({self._cache_metrics(server)})")

    def _cache_metrics(self, server: Server) -> str:
        code, _, text = http(f"{server.url}/metrics")
        if code != 200:
            return f"HTTP {code}"
        wanted = ("llm_requests_total", "llm_cache_hits_total", "llm_cache_misses_total")
        totals = dict.fromkeys(wanted, 0.0)
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in totals:
                totals[name] += float(line.rsplit(" ", 1)[1])
        return ", ".join(f"{name} {value:g}" for name, value in totals.items())

    def wait_while_serving(self) -> None:
        """Keep the servers up until Ctrl-C (or until one exits)."""
        urls = ", ".join(f"{s.url}/v1" for s in self.servers.values())
        self.printer.line(f"\nserving at {urls}; press Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            while all(s.pod.poll() is None for s in self.servers.values()):
                time.sleep(1.0)

    # --- PromptExperiment -------------------------------------------------------------------------

    def experiment(self, resource: Resource) -> None:
        """Run the experiment Job's pod against the local server; print the per-variant table and verdict."""
        owner, spec = resource.owner, cast(pexp.PromptExperimentSpec, resource.spec)
        try:
            endpoint, model = resolve_target(self.operator, owner, spec, need_ready=True)
            judges = resolve_judges(self.operator, owner, spec, need_ready=True)
        except ServerNotReadyError as error:
            raise RunFailedError(f"PromptExperiment {resource.name}: {error}") from error
        ref = spec.target.model_deployment_ref
        if ref is not None:
            endpoint = f"{self.servers[resource.namespace, ref.name].url}/v1"  # the Service, locally
        judges = self._local_judges(resource, judges)
        children = pexp_manifests.build_children(owner, spec, endpoint, model, LOCAL_IMAGE, judges=judges)
        pod = self._pod(resource, children[0]["data"], children[-1]["spec"]["template"]["spec"])
        self.printer.line(f"promptexperiment.kubellm.io/{resource.name} created (pod log: {pod.log_file})")

        def status_of(job: dict[str, Any], report: Mapping[str, str], previous: StatusBase) -> StatusBase:
            return promptexperiment_status(
                cast(pexp.PromptExperimentStatus, previous),
                1,
                job=job,
                report_data=report,
                report_name=report_name(owner),
                at=now(),
            )

        status = cast(pexp.PromptExperimentStatus, self._watch(resource, pod, pexp.PromptExperimentStatus(), status_of))
        if status.phase != "Succeeded":
            raise RunFailedError(self._failure(resource, status, pod))
        for line in results_table(spec, status):
            self.printer.line(f"  {line}")
        if REPORT_MARKDOWN_KEY in pod.report():
            self.printer.line(f"  report: {pod.report_dir / REPORT_MARKDOWN_KEY}")

    def _local_judges(
        self, resource: Resource, judges: Mapping[str, pexp_manifests.JudgeEndpoint]
    ) -> dict[str, pexp_manifests.JudgeEndpoint]:
        """The judges' ModelDeployments at their local servers (they run before the experiment)."""
        local = {}
        for scorer in cast(pexp.PromptExperimentSpec, resource.spec).scorers:
            if scorer.name in judges and scorer.judge is not None and scorer.judge.model_deployment_ref is not None:
                server = self.servers[resource.namespace, scorer.judge.model_deployment_ref.name]
                local[scorer.name] = replace(judges[scorer.name], url=f"{server.url}/v1")  # the Service, locally
        return local

    # --- shared -----------------------------------------------------------------------------------

    def _pod(
        self,
        resource: Resource,
        config: Mapping[str, str],
        pod_spec: Mapping[str, Any],
        extra_args: tuple[str, ...] = (),
    ) -> LocalPod:
        pod = LocalPod(
            name=resource.name,
            pod_spec=pod_spec,
            config=config,
            folder=self.work.pod(resource.kind, resource.name),
            work=self.work,
            namespace=resource.namespace,
            secrets=self.manifests.secrets,
            config_maps=self.manifests.config_maps,
            extra_args=extra_args,
        )
        try:
            return pod.start()
        except PodError as error:
            raise RunFailedError(f"{resource.kind} {resource.name}: {error}") from error

    def _watch(
        self,
        resource: Resource,
        pod: LocalPod,
        initial: StatusBase,
        status_of: Callable[[dict[str, Any], Mapping[str, str], StatusBase], StatusBase],
    ) -> StatusBase:
        created = now()
        status = initial
        while True:
            code = pod.poll()
            status = status_of(job_view(resource.name, created, code, pod.log_file), pod.report(), status)
            self.printer.status(resource, created, status)
            if code is not None:
                self.store.put(resource, status)
                self.finished.append((resource, created, status))
                return status
            time.sleep(POLL_SECONDS)

    def _secret(self, namespace: str, ref: Any) -> str | None:
        if ref is None:
            return None
        return self.manifests.secrets.get((namespace, ref.name), {}).get(ref.key)

    def _failure(self, resource: Resource, status: StatusBase, pod: LocalPod, reason: str = "") -> str:
        condition = status.conditions[0] if status.conditions else None
        said = f"{condition.reason}: {condition.message}" if condition else "no status"
        tail = "\n".join(f"    {line}" for line in pod.log_tail())
        why = f" ({reason})" if reason else ""
        return f"{resource.kind} {resource.name} failed{why}: {said}\n  last log lines:\n{tail}"

    def summary(self) -> None:
        """Every resource's final row, grouped by kind (``kubectl get kubellm``)."""
        self.printer.line()
        for kind, info in KINDS.items():
            rows = [columns.row(info, _with_status(r, c, s), now()) for r, c, s in self.finished if r.kind == kind]
            if rows:
                self.printer.line(f"# {info.plural}.{API_VERSION.split('/')[0]}")
                for line in columns.format_table([columns.header(info), *rows]):
                    self.printer.line(line)


def _metric(result: Any, name: str) -> Any:
    return next((m for m in result.metrics if m.name == name), None)


def _interval(low: float | None, high: float | None) -> str:
    return f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""


def results_table(spec: pexp.PromptExperimentSpec, status: pexp.PromptExperimentStatus) -> Iterator[str]:
    """The per-variant table (primary metric with its interval), the comparisons and the verdict."""
    level = f"{(1 - float(spec.alpha)) * 100:g}%"
    metric = spec.primary_metric
    header = ["VARIANT", "SAMPLES", "ERRORS", f"{metric.upper()} ({level} CI)", "CUT OFF", "NO ANSWER", "P50 LATENCY"]
    rows = [header]
    for result in status.results:
        summary = _metric(result, metric)
        shown = f"{summary.mean:.3f} {_interval(summary.ci_low, summary.ci_high)}" if summary else ""
        latency = f"{result.latency_p50_seconds:.3f}s" if result.latency_p50_seconds is not None else ""
        control = " (control)" if result.name == spec.control else ""
        # empty, not 0, where the count does not apply (no extract pattern: nothing to extract)
        counts = ["" if count is None else str(count) for count in (result.cut_off, result.unextracted)]
        rows.append([result.name + control, str(result.samples), str(result.errors), shown, *counts, latency])
    yield from columns.format_table(rows)
    if status.comparisons:
        yield ""
        compared = [["COMPARISON", "DIFFERENCE", f"{level} CI", "ADJUSTED P", "SIGNIFICANT"]]
        for c in status.comparisons:
            p_value = f"{c.adjusted_p_value:.3g}" if c.adjusted_p_value is not None else ""
            compared.append(
                [
                    f"{c.variant} vs {c.control}",
                    f"{c.difference:+.3f}",
                    _interval(c.ci_low, c.ci_high),
                    p_value,
                    "yes" if c.significant else "no",
                ]
            )
        yield from columns.format_table(compared)
    yield ""
    yield from search_lines(status)
    yield f"verdict: {'winner ' + status.winner if status.winner else 'no winner'}: {status.summary or ''}"


def search_lines(status: pexp.PromptExperimentStatus) -> Iterator[str]:
    """With a prompt search: its splits, the control's and the best candidate's scores, what was found."""
    found = status.optimization
    if found is None:
        return
    splits = found.splits
    control, best = (f"{v:.3f}" if v is not None else "-" for v in (found.control_score, found.best_score))
    yield (
        f"prompt search: {found.completed} trials on {splits.search} search rows ({splits.train} train rows for "
        f"examples): control {control}, best {best} at trial {found.best_trial}; the variants above ran on the "
        f"{splits.held_out} held-out rows"
    )
    instruction = f'instruction "{found.instruction}"' if found.instruction else "no instruction"
    key = f" (report key {found.variant_key})" if found.variant_key else ""
    yield f"found: {found.variant}: {instruction}, {found.examples} worked examples{key}"
