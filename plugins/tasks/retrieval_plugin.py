"""Registers the `retrieval` task: parameters and help, no torch; retrieval.py is imported on first build."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmreg.hookspecs import hookimpl


class RetrievalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    shortlist: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        None,
        description="rank by pooled-vector cosine, rescore only the top K per query with the fusion (ALBEF, BLIP); "
        "all: score every pair; unset: K=128 where the fusion trained on hard negatives (a loss reading pairs, e.g. itm), else every pair",
    )
    rescore: Literal["fusion", "fusion+cosine"] | None = Field(
        None,
        description="what ranks a pair: the fusion's score, or it plus the pooled cosine (BLIP's evaluation adds the contrastive "
        "similarity to the matching logit); unset: fusion+cosine where the fusion trained on hard negatives, else fusion",
    )


@hookimpl
def mmreg_register_tasks(register):
    register(
        "retrieval",
        "mmreg_plugins.tasks.retrieval:Retrieval",
        params=RetrievalParams,
        help="match images and captions: recall@K (no head); headline the mean recall@1 of both directions",
    )
