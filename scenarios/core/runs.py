"""Run services: start a template or recipe run, advance it when a child job finishes, cancel it.

Each step's job goes through `submit_job` like any other job; structured outputs are parsed here once the job has
finished, with one repair job when the text does not parse.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from aigc_saas.accounts.models import ApiKey, Tenant
from aigc_saas.errors import Conflict, InvalidInput, NotFound, ServiceError
from aigc_saas.jobs import services as jobs
from aigc_saas.jobs.models import Job, JobState
from scenarios.core.models import Recipe, Run, RunState, RunStep, Template
from scenarios.core.recipes import step_template
from scenarios.core.rendering import render
from scenarios.core.structured import StructuredOutputInvalid, parse_structured, repair_prompt
from scenarios.core.templates import get_version, render_params
from scenarios.core.variables import validate_variables

log = logging.getLogger(__name__)
ACTIVE = (RunStep.State.RUNNING, RunStep.State.REPAIRING)


def _origin(step: RunStep, **extra: Any) -> dict[str, Any]:
    version = step.template_version
    origin = {
        "scenario": version.template.scenario,
        "template": version.template.slug,
        "template_id": str(version.template_id),
        "version": version.version,
        "run": str(step.run_id),
        "step": step.name,
    }
    if step.run.recipe_id:
        origin |= {"recipe": step.run.recipe.slug, "recipe_version": step.run.recipe_version}
    return origin | extra


class _Replayed(Exception):
    """The first step's job came from an earlier request with the same `Idempotency-Key`: its run is the answer."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def _submit(
    step: RunStep, variables: dict[str, Any], api_key: ApiKey | None, webhook_url: str = "", idempotency_key: str = ""
) -> Job:
    version = step.template_version
    params = render_params(version, variables, step.param_overrides)
    job = jobs.submit_job(
        step.run.tenant,
        version.generator,
        params,
        api_key=api_key,
        origin=_origin(step),
        webhook_url=webhook_url,
        idempotency_key=idempotency_key,
    )
    if idempotency_key and (job.origin or {}).get("run") != str(step.run_id):
        earlier = (job.origin or {}).get("run")
        if not earlier:
            raise Conflict(
                "`Idempotency-Key`: this key was used for a different request; use a new key for a new run",
                code="idempotency_key_reused",
            )
        raise _Replayed(earlier)  # rolls this request's run back; the earlier run is returned
    RunStep.objects.filter(pk=step.pk).update(state=RunStep.State.RUNNING, variables=variables, job=job)
    return job


def _run_key(owner: Any, key: str) -> str:
    """A run's key on its first job: scoped to the template or recipe, so `POST /jobs` keys never collide."""
    return f"run:{owner.pk}:{key}" if key else ""


def _replayable(start: Any) -> Any:
    """Run `start` in a transaction; a replayed `Idempotency-Key` answers with the run the key first made."""

    def wrapper(*args: Any, **kwargs: Any) -> Run:
        try:
            with transaction.atomic():
                return start(*args, **kwargs)
        except _Replayed as replay:
            return Run.objects.get(pk=replay.run_id)

    wrapper.__doc__, wrapper.__name__ = start.__doc__, start.__name__
    return wrapper


@_replayable
def start_template_run(
    tenant: Tenant,
    template: Template,
    variables: Any,
    params: Any = None,
    *,
    version: int | None = None,
    api_key: ApiKey | None = None,
    webhook_url: str = "",
    idempotency_key: str = "",
) -> Run:
    """Validate the variables, then submit the template's job; a bad variable is a 400 naming it."""
    chosen = get_version(template, version)
    clean = validate_variables(chosen.variables, variables)
    run = Run.objects.create(tenant=tenant, api_key=api_key, kind=Run.Kind.TEMPLATE, variables=clean)
    step = RunStep.objects.create(
        run=run,
        index=0,
        name=template.slug.replace("-", "_")[:80],
        template_version=chosen,
        param_overrides=params or {},
    )
    _submit(step, clean, api_key, webhook_url, _run_key(template, idempotency_key))
    return run


@_replayable
def start_recipe_run(
    tenant: Tenant,
    recipe: Recipe,
    variables: Any,
    params: Any = None,
    *,
    api_key: ApiKey | None = None,
    idempotency_key: str = "",
) -> Run:
    """Validate the run's inputs and per-step overrides, then submit the first step."""
    clean = validate_variables(recipe.variables, variables)
    params = params or {}
    names = [s["name"] for s in recipe.steps]
    if not isinstance(params, dict) or any(not isinstance(v, dict) for v in params.values()):
        raise InvalidInput("`params` must map step names to objects of param overrides", code="invalid_params")
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise InvalidInput(f"`params.{unknown[0]}`: no such step; the steps are {names}", code="invalid_params")
    run = Run.objects.create(
        tenant=tenant,
        api_key=api_key,
        kind=Run.Kind.RECIPE,
        recipe=recipe,
        recipe_version=recipe.version,
        steps_definition=recipe.steps,
        variables=clean,
    )
    for index, definition in enumerate(recipe.steps):
        RunStep.objects.create(
            run=run,
            index=index,
            name=definition["name"],
            template_version=step_template(definition["template"]).latest,
            param_overrides={**definition.get("params", {}), **params.get(definition["name"], {})},
        )
    first = run.steps.get(index=0)
    _submit(first, _step_variables(run, first), api_key, idempotency_key=_run_key(recipe, idempotency_key))
    return run


def _step_variables(run: Run, step: RunStep) -> dict[str, Any]:
    """Render the step's variable mapping over the run's inputs and earlier steps' outputs, then validate."""
    mapping = run.steps_definition[step.index].get("variables", {})
    context = {"inputs": run.variables, "steps": {s.name: s.output for s in run.steps.filter(index__lt=step.index)}}
    values = {
        name: render(source, context, field=f"steps.{step.name}.variables.{name}") for name, source in mapping.items()
    }
    specs = {v["name"]: v for v in step.template_version.variables}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:  # the template changed since the recipe was saved
            raise InvalidInput(
                f"`steps.{step.name}.variables.{name}`: the template no longer has this variable; it has {sorted(specs)}",
                code="invalid_step_variable",
            )
        values[name] = _convert(value, spec, field=f"steps.{step.name}.variables.{name}")
    return validate_variables(step.template_version.variables, values, prefix=f"steps.{step.name}.variables")


def _convert(value: str, spec: dict[str, Any], *, field: str) -> Any:
    """A rendered text as the variable's type; what an earlier step wrote may not be a number: a 400 naming it."""
    kind = spec.get("type", "string")
    if kind in ("integer", "number"):
        try:
            number = float(value)
            return number if kind == "number" else int(number)
        except (TypeError, ValueError, OverflowError):  # "twelve", "nan", "inf", "1e999"
            raise InvalidInput(
                f"`{field}`: {value[:80]!r} (rendered from an earlier step) is not a valid {kind}",
                code="invalid_step_variable",
            ) from None
    if kind == "boolean":
        return value.strip().lower() in ("true", "1", "yes")
    if spec.get("max_length") or kind in ("string", "text"):
        limit = spec.get("max_length") or (300 if kind == "string" else 4000)
        return value[:limit]  # earlier steps' text may run long; the template bounds what it reads
    return value


def _output(job: Job) -> dict[str, Any]:
    result = job.result or {}
    artifacts = [
        {"id": str(a.pk), "job": str(job.pk), "filename": a.filename, "content_type": a.content_type}
        for a in job.artifacts.all()
    ]
    return {"text": result.get("text") or "", "data": result.get("data"), "artifacts": artifacts}


def _finish(run: Run, state: str, *, step: RunStep | None = None, code: str = "", message: str = "") -> None:
    fields: dict[str, Any] = {"state": state, "finished_at": timezone.now()}
    if step is not None:
        version = step.template_version
        fields |= {
            "failed_step": step.name,
            "error_code": code,
            "error_message": f"step `{step.name}` ({version.template.scenario}/{version.template.slug} "
            f"v{version.version}) {state}: {message}"[:4000],
        }
    Run.objects.filter(pk=run.pk).update(**fields)
    RunStep.objects.filter(run=run, state=RunStep.State.PENDING).update(state=RunStep.State.CANCELLED)


def _fail_step(run: Run, step: RunStep, code: str, message: str, state: str = RunStep.State.FAILED) -> None:
    RunStep.objects.filter(pk=step.pk).update(state=state, error_code=code, error_message=message[:4000])
    _finish(
        run,
        RunState.CANCELLED if state == RunStep.State.CANCELLED else RunState.FAILED,
        step=step,
        code=code,
        message=message,
    )


# The database itself failing (locked, gone): the run is left as it is and the stale-run sweep tries again.
TRANSIENT = (OperationalError, InterfaceError)


def advance_run(run_id: Any) -> Run | None:
    """Move a run on after its current job finished; safe to call twice and while nothing has finished.

    Any other failure fails the run, naming the step it was at, so no run stays `running` forever."""
    try:
        with transaction.atomic():
            run = Run.objects.select_for_update().filter(pk=run_id).first()
            if run is None or run.is_terminal:
                return run
            _advance(run)
    except TRANSIENT:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug in one step must end its run, not leave it stuck
        log.exception("advancing run %s failed; failing the run", run_id)
        _fail_stuck(run_id, exc)
    run = Run.objects.filter(pk=run_id).first()
    return run


def _fail_stuck(run_id: Any, exc: Exception) -> None:
    """Fail the run at its active step (the advance above rolled back), in a transaction of its own."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return
        step = (
            run.steps.select_related("template_version__template").filter(state__in=ACTIVE).first()
            or run.steps.select_related("template_version__template").order_by("index").first()
        )
        code = getattr(exc, "code", None) if isinstance(exc, ServiceError) else None
        _fail_step(run, step, code or "internal_error", f"{type(exc).__name__}: {exc}")


def advance_stale_runs() -> int:
    """The sweep for runs whose doorbell was lost; one run that fails to advance does not stop the others."""
    stale = stale_run_ids()
    for run_id in stale:
        try:
            advance_run(run_id)
        except DatabaseError:
            log.exception("could not advance run %s; the next sweep tries again", run_id)
    return len(stale)


def _advance(run: Run) -> None:
    step = run.steps.select_related("template_version__template").filter(state__in=ACTIVE).first()
    job = step and (step.repair_job if step.state == RunStep.State.REPAIRING else step.job)
    if step is None or job is None or not job.is_terminal:
        return
    if job.state != JobState.SUCCEEDED:
        state = RunStep.State.CANCELLED if job.state == JobState.CANCELLED else RunStep.State.FAILED
        _fail_step(run, step, job.error_code or job.state, f"job {job.pk}: {job.error_message}", state)
        return
    output = _output(job)
    schema = step.template_version.output_schema
    if schema is not None:
        try:
            output["data"] = parse_structured(output["text"], schema)
        except StructuredOutputInvalid as exc:
            constrained = bool((job.params or {}).get("response_format"))
            if step.state == RunStep.State.RUNNING and not constrained:
                try:
                    _submit_repair(step, job, exc.message)
                except ServiceError as refused:  # quota reached, generator disabled meanwhile…
                    _fail_step(
                        run,
                        step,
                        refused.code,
                        f"job {job.pk}: {exc.message}; the repair job could not be submitted: {refused.message}",
                    )
            elif constrained:
                # Decoding was constrained to the schema, so a repair job would meet the same grammar: fail clearly.
                _fail_step(run, step, "structured_output_invalid", f"job {job.pk}: {exc.message}")
            else:
                first = step.error_message or "the first output did not parse"
                _fail_step(
                    run,
                    step,
                    "structured_output_invalid",
                    f"{first}; after one repair attempt (job {job.pk}): {exc.message}",
                )
            return
    RunStep.objects.filter(pk=step.pk).update(state=RunStep.State.SUCCEEDED, output=output)
    following = run.steps.filter(index=step.index + 1).select_related("template_version__template").first()
    if following is None:
        _finish(run, RunState.SUCCEEDED)
        return
    try:
        with transaction.atomic():  # a savepoint: a failed submission leaves the finished step recorded
            _submit(following, _step_variables(run, following), run.api_key)
    except ServiceError as exc:
        _fail_step(run, following, exc.code, exc.message)
    except TRANSIENT:
        raise
    except Exception as exc:  # noqa: BLE001 - the run fails at the step that could not start, not stuck
        log.exception("run %s: step %s could not be submitted", run.pk, following.name)
        _fail_step(run, following, "internal_error", f"could not be submitted: {type(exc).__name__}: {exc}")


def _submit_repair(step: RunStep, job: Job, problem: str) -> None:
    """One ordinary job asking the same generator to turn its own output into valid JSON."""
    params = {
        **job.params,
        "prompt": repair_prompt(job.result.get("text", ""), problem, step.template_version.output_schema),
    }
    params["prompt"] = params["prompt"][:8000]
    repair = jobs.submit_job(
        step.run.tenant, job.generator, params, api_key=step.run.api_key, origin=_origin(step, repair_of=str(job.pk))
    )
    RunStep.objects.filter(pk=step.pk).update(
        state=RunStep.State.REPAIRING, repair_job=repair, error_message=f"job {job.pk}: {problem}"[:4000]
    )


def cancel_run(run: Run) -> Run:
    """Stop the run now and ask its running job to stop."""
    with transaction.atomic():
        if (
            Run.objects.filter(pk=run.pk, state=RunState.RUNNING).update(
                state=RunState.CANCELLED, finished_at=timezone.now(), error_code="cancelled", error_message="cancelled"
            )
            == 0
        ):
            run.refresh_from_db()
            raise Conflict(f"run {run.pk} has already {run.state} and cannot be cancelled", code="run_not_cancellable")
        active = list(run.steps.filter(state__in=ACTIVE).select_related("job", "repair_job"))
        run.steps.filter(state__in=[*ACTIVE, RunStep.State.PENDING]).update(state=RunStep.State.CANCELLED)
    for step in active:
        job = step.repair_job or step.job
        if job is not None and not job.is_terminal:
            with contextlib.suppress(Conflict):  # it finished meanwhile; the run stays cancelled
                jobs.cancel_job(job)
    run.refresh_from_db()
    return run


def get_run(tenant: Tenant, run_id: Any) -> Run:
    run = Run.objects.filter(tenant=tenant, pk=run_id).first()
    if run is None:
        raise NotFound(f"`run_id`: no run {run_id} in this tenant", code="run_not_found")
    return run


def stale_run_ids(limit: int = 200) -> list[Any]:
    """Running runs whose current job has finished: the doorbell was lost, the database still knows."""
    steps = RunStep.objects.filter(run__state=RunState.RUNNING).filter(
        state=RunStep.State.RUNNING, job__state__in=[JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
    ) | RunStep.objects.filter(
        run__state=RunState.RUNNING,
        state=RunStep.State.REPAIRING,
        repair_job__state__in=[JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED],
    )
    return list(steps.values_list("run_id", flat=True).distinct()[:limit])
