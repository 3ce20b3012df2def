"""Dream parameters: one schema, the model's defaults filled in, every field checked.

The web validates a form with it, the CLI validates flags with it, and the
worker receives the already-effective values from the job record.
"""
from __future__ import annotations

import math
import struct
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .models import DEFAULT_MODEL, MODELS

__all__ = ["DreamParams", "ParamsError", "echo", "form_value", "parse_params", "parse_layers", "validate"]

M = TypeVar("M", bound=BaseModel)

# Loose upper bounds: they keep one job from holding a worker for hours.
MAX_OCTAVES = 8
MAX_ITERATIONS = 500


class ParamsError(ValueError):
    """Invalid parameters; ``fields`` maps each offending field to a message."""

    def __init__(self, fields: dict[str, str]):
        self.fields = fields
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))


def echo(value: Any, limit: int = 40) -> str:
    """A client's value quoted in an error, cut to ``limit`` characters: an error never costs
    more than the request that caused it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def form_value(name: str, value) -> str:
    """A parameter as the form spells it: layers as ``name=weight,...``, no max_loss as ``none``,
    a float as short as it reads back exactly."""
    if value is None:
        return "none" if name == "max_loss" else ""
    if isinstance(value, dict):
        return ",".join(f"{k}={form_value(k, v)}" for k, v in value.items())
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def parse_layers(value: Any) -> dict[str, float]:
    """Accept ``{"mixed4": 1.0}`` or the CLI/form spelling ``"mixed4=1.0,mixed5=1.5"``."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise ValueError("expected name=weight pairs, e.g. mixed4=1.0,mixed5=1.5")
    layers: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"{echo(part)} has no layer name")
        if name in layers:
            raise ValueError(f"layer {echo(name)} given twice")
        try:
            layers[name] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"weight {echo(weight)} of layer {echo(name)} is not a number") from None
    return layers


class DreamParams(BaseModel):
    """Effective parameters of one dream; missing ones come from the model (and preset)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    model: str = DEFAULT_MODEL
    preset: str | None = None
    layers: dict[str, float]
    step: float = Field(gt=0, le=1000)
    octaves: int = Field(3, ge=1, le=MAX_OCTAVES)
    octave_scale: float = Field(1.4, ge=1.0, le=4.0)
    iterations: int = Field(20, ge=0, le=MAX_ITERATIONS)
    max_loss: float | None = Field(gt=0)
    max_side: int | None = Field(None, ge=32, le=16384)
    # Beyond the seed (all off by default, so defaults reproduce it exactly):
    # bf16 computes the network in bfloat16 (loss and image stay float32); it is
    # faster only where the device has native bf16, so a worker without it runs
    # fp32 and says so.  auto: the fastest mode the worker has.
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    tile_size: int | None = Field(None, ge=256, le=4096)  # gradient tile by tile: bounded memory
    jitter: int = Field(0, ge=0, le=256)  # random roll of up to this many pixels per step
    seed: int = Field(0, ge=0, le=2**31 - 1)  # for the random rolls of tiling and jitter
    # With a guide image (a job file, not a parameter): the layer whose features the dream
    # is drawn toward, instead of the loss of `layers`; None: the model's guide_layer.
    # Kept None here, not filled in: a job without a guide has no guide layer.
    guide_layer: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if not (isinstance(v, str) and v.strip() == "" and k != "max_loss")}
        # An unknown model or preset still gets defaults, so that the only
        # error reported is the one naming it.
        model, preset = data.get("model"), data.get("preset")
        spec = MODELS.get(model if isinstance(model, str) else DEFAULT_MODEL, MODELS[DEFAULT_MODEL])
        merged: dict[str, Any] = {"layers": dict(spec.default_layers), "step": spec.step, "max_loss": spec.max_loss}
        merged.update(spec.presets.get(preset if isinstance(preset, str) else "", {}))
        merged.update(data)
        if isinstance(merged.get("max_loss"), str) and merged["max_loss"].strip().lower() in ("none", "off", ""):
            merged["max_loss"] = None
        return merged

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in MODELS:
            raise ValueError(f"unknown model {echo(v)}; choose one of {', '.join(MODELS)}")
        return v

    @field_validator("layers", mode="before")
    @classmethod
    def _parse_layers(cls, v: Any) -> Any:
        return parse_layers(v)

    @model_validator(mode="after")
    def _check_against_model(self) -> "DreamParams":
        spec = MODELS[self.model]
        if self.preset is not None and self.preset not in spec.presets:
            raise ValueError(f"preset: unknown preset {echo(self.preset)} for {self.model}; choose one of {', '.join(spec.presets)}")
        if not self.layers:
            raise ValueError("layers: give at least one layer")
        for name, weight in self.layers.items():
            if name not in spec.layers:
                raise ValueError(f"layers: unknown layer {echo(name)} for {self.model}; choose from {', '.join(spec.layers)}")
            if not math.isfinite(weight):
                raise ValueError(f"layers: weight of {echo(name)} must be a finite number")
        for name in type(self).model_fields:  # the worker computes in float32: 1e308 is finite only here
            value = getattr(self, name)
            if isinstance(value, float) and not _fits_float32(value):
                raise ValueError(f"{name}: {value:g} is beyond float32 (at most about 3.4e38)")
        for name, weight in self.layers.items():
            if not _fits_float32(weight):
                raise ValueError(f"layers: weight of {echo(name)} ({weight:g}) is beyond float32 (at most about 3.4e38)")
        if self.guide_layer is not None and self.guide_layer not in spec.layers:
            raise ValueError(f"guide_layer: unknown layer {echo(self.guide_layer)} for {self.model}; "
                             f"choose from {', '.join(spec.layers)}")
        # Tiles are at least half tile_size wide; each must be big enough for the layers.
        need = spec.min_side_for([*self.layers, *filter(None, [self.guide_layer])])
        if self.tile_size is not None and self.tile_size < 2 * need:
            raise ValueError(f"tile_size: must be at least {2 * need} for these layers of {self.model}")
        return self


def _fits_float32(value: float) -> bool:
    """Whether ``value`` stays finite as float32 (the worker's dtype)."""
    try:
        return math.isfinite(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:  # some Pythons refuse to pack it rather than round it to inf
        return False


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate raw values (form strings or JSON) against ``model``; ParamsError names each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields: dict[str, str] = {}
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["loc"]:
                name = str(err["loc"][0])
            else:  # model-level checks put the field name in front of the message
                name, _, msg = msg.partition(": ")
            if err["type"] == "extra_forbidden":
                msg = "unknown parameter"
            fields.setdefault(name, msg)
        raise ParamsError(fields) from None


def parse_params(data: dict[str, Any]) -> DreamParams:
    """Validate raw values (form strings or JSON) and raise ParamsError naming each bad field."""
    return validate(DreamParams, data)
