"""start-run's dry run, for `mnistflow verify`: reach KFP exactly as a start does (the same
adapter, credentials and URL), ask two read-only questions, and say what was found.

It calls healthz (KFP's release, and whether it runs multi-user) and looks the experiment up by
name, as a start does first. It creates nothing (not even the experiment), claims nothing,
records and sends nothing, and does not raise: a failed dry run is an answer, not a function
error, so it trips no alarm and Lambda retries nothing.
"""

from __future__ import annotations

from typing import Any

from core import contracts
from core.settings import Settings
from lambdas.logic.ports import KfpCallFailed, KfpRunsApi
from lambdas.observability import logger


def check_kfp(kfp: KfpRunsApi, settings: Settings, connection_hint: str) -> dict[str, Any]:
    """The dry run's answer: how KFP is reached, then `ok` with what KFP said (`kfp_version`,
    `multi_user`, `experiment_id`, "" when the experiment is not made yet), or `ok` false with
    the call that failed, its kind and HTTP status, the error and what to check."""
    answer: dict[str, Any] = {
        contracts.DRY_RUN_KEY: contracts.DRY_RUN_VALUE,
        "kfp_mode": settings.kfp_mode,
        "eks_cluster_name": settings.eks_cluster_name,
        "kfp_url": settings.kfp_url,
        "kfp_namespace": settings.kfp_namespace,
        "kfp_service_port": settings.kfp_service_port,
        "experiment_name": settings.kfp_experiment_name,
    }
    call = "healthz"
    try:
        health = kfp.health()
        answer |= {"kfp_version": health.version, "multi_user": health.multi_user}
        call = "experiment lookup"
        name = settings.kfp_experiment_name
        found = [e for e in kfp.find_experiments(name) if e.display_name == name]
        answer["experiment_id"] = found[0].experiment_id if found else ""
    except KfpCallFailed as error:
        answer |= {
            "ok": False,
            "failed_call": call,
            "kind": error.kind,
            "status": error.status,
            "error": str(error),
            "what_to_check": connection_hint,
        }
        logger.warning("Dry run: KFP not reached", extra={"answer": answer})
        return answer
    answer["ok"] = True
    logger.info("Dry run: KFP reached", extra={"answer": answer})
    return answer
