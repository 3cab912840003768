"""Registers the `retrieval` task: parameters and help, no torch; retrieval.py is imported on first build."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class RetrievalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    shortlist: int | None = Field(
        None,
        ge=1,
        description="rank by pooled-vector cosine, rescore only the top K per query with the fusion (ALBEF, BLIP); unset: score every pair",
    )


@hookimpl
def mmreg_register_tasks(register):
    register(
        "retrieval",
        "mmreg_plugins.tasks.retrieval:Retrieval",
        params=RetrievalParams,
        help="match images and captions: recall@K (no head); headline the mean recall@1 of both directions",
    )
