"""``uses: notify``: POST a JSON message to a webhook (Slack, a pager, your own service).

The body is the user's ``payload`` object (templated like any ``with`` value, so
``${run.status}`` and ``${run.failed}`` tell the outcome when the stage has ``when: always``)
plus a ``stageflow`` block naming the run, pipeline and stage. With ``secret_env`` the exact
bytes sent are signed with HMAC-SHA256 (``X-Stageflow-Signature: sha256=<hex>``) so the receiver
can tell the call came from us; ``sent_at`` in the body lets it refuse replays. The body is
built once, so every retry sends (and signs) the same bytes.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, field_validator

from stageflow.executors.base import Executor, ExecutorParams
from stageflow.executors.http_retry import json_bytes, post_json
from stageflow.spec.model import Seconds
from stageflow.worker.context import StageContext

__all__ = ["NotifyExecutor"]


class NotifyParams(ExecutorParams):
    url: str = Field(description="The webhook URL (http or https).")
    payload: dict[str, Any] = Field(
        default_factory=dict, description="JSON object sent as the body (may use ${...})."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    secret_env: str | None = Field(
        None, description="Environment variable holding the HMAC-SHA256 signing secret."
    )
    timeout: Seconds = Field(10.0, gt=0, description="Timeout of one HTTP request.")
    retries: int = Field(3, ge=0, le=20, description="Retries on 429, 5xx and network errors.")
    backoff: Seconds = Field(1.0, gt=0, description="First wait between retries (doubles).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url {value!r:.80} must start with http:// or https://")
        return value


class NotifyExecutor(Executor):
    name = "notify"
    Params = NotifyParams

    async def run(self, params: NotifyParams, ctx: StageContext) -> dict[str, Any]:
        body = json_bytes(
            {
                **params.payload,
                "stageflow": {
                    "run_id": ctx.run_id,
                    "pipeline": ctx.pipeline,
                    "stage": ctx.name,
                    "attempt": ctx.attempt,
                    "sent_at": round(time.time(), 3),
                },
            }
        )
        response, attempts = await post_json(
            params.url,
            body,
            headers=params.headers,
            secret_env=params.secret_env,
            timeout=params.timeout,
            retries=params.retries,
            initial=params.backoff,
            what="notification",
        )
        return {"status": response.status_code, "attempts": attempts, "body_bytes": len(body)}
