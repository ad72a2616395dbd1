"""The service's request bodies: their fields, defaults and help (the OpenAPI page shows it).

Unknown fields and loose types are refused by pydantic here; the bounds (`Limits`) are
checked by the routes in `app`, which know the model and the limits in force.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    # Unknown fields and loose types ("true", "10") are errors, not guesses.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, description="Which model (see /v1/info); default: the first.")


class ScoreRequest(_Request):
    sentences: list[str] = Field(
        ..., description="Sentences to score, each tokenized like the model's training corpus."
    )
    per_word: bool = Field(False, description="Also give every token's probability.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sentences": ["the cat sat on the mat"]}]}
    )


class NextRequest(_Request):
    context: str = Field(..., description="Text so far; empty: the first word of a sentence.")
    top_k: int = Field(10, description="How many candidates.")

    model_config = ConfigDict(json_schema_extra={"examples": [{"context": "the cat sat on the"}]})


class SampleRequest(_Request):
    prompt: str = Field("", description="Words every sentence opens with.")
    n: int = Field(1, description="Sentences to draw.")
    max_length: int = Field(40, description="Stop a sentence after this many tokens.")
    min_length: int = Field(1, description="Never end a sentence before this many tokens.")
    temperature: float = Field(1.0, description="Below 1: safer choices; above 1: bolder.")
    top_k: int = Field(0, description="Draw only from the k likeliest tokens; 0 = all.")
    greedy: bool = Field(False, description="Always take the likeliest token.")
    seed: int | None = Field(None, description="Seed for reproducible samples.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"prompt": "the", "n": 3, "seed": 1}]}
    )
