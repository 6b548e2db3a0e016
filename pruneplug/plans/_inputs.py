"""A plan's example input: the shape and dtype of what the model is called with, as a file can say it.

Channel rules trace the model's channel graph and compaction checks the
compacted model against the masked one; both run the model once, on an
input a plan describes by its ``shape``, ``dtype`` and value range
(``[low, high)``): uniform floats for images and features, integers for
token ids. The tensor is drawn from a generator of its own with a fixed
seed, so the same plan always runs on the same input and torch's global
random generator (which random strategies draw from) is left alone.

>>> ExampleInput(shape=(1, 3, 8, 8)).describe()
'[1, 3, 8, 8] float32'
>>> ids = example_tensor(ExampleInput(shape=(2, 5), dtype="int64", high=100))
>>> ids.dtype, bool((ids >= 0).all() and (ids < 100).all())
(torch.int64, True)
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

__all__ = ["ExampleInput", "InputDtype", "INPUT_DTYPES", "MAX_INPUT_ENTRIES", "example_tensor", "model_device"]

InputDtype = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32"]
INPUT_DTYPES: tuple[InputDtype, ...] = ("float32", "float64", "float16", "bfloat16", "int64", "int32")
_TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in INPUT_DTYPES}

MAX_INPUT_ENTRIES = 2**28
"""The most entries an example input may have (1 GiB of float32): a typo in a shape is refused, not allocated."""

_SEED = 0

Number = StrictInt | StrictFloat


class ExampleInput(BaseModel):
    """The one tensor a model is called with, for channel rules and compaction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape: tuple[Annotated[StrictInt, Field(gt=0)], ...] = Field(
        min_length=1, max_length=8, description="Its shape, batch included: [1, 3, 224, 224]."
    )
    dtype: InputDtype = Field(
        default="float32", description="'float32', 'float64', 'float16', 'bfloat16', or 'int64'/'int32' (token ids)."
    )
    low: Number | None = Field(default=None, description="Values are drawn from [low, high); default 0.")
    high: Number | None = Field(
        default=None,
        description="Default 1 (for integer dtypes: all zeros, valid ids for any vocabulary; "
        "give the vocabulary size to vary them).",
    )

    @model_validator(mode="after")
    def _check(self) -> ExampleInput:
        entries = math.prod(self.shape)
        if entries > MAX_INPUT_ENTRIES:
            raise PydanticCustomError(
                "input_size",
                "the shape {shape} has {entries} entries, more than the {limit} an example input may have; "
                "one small batch is enough to trace the model",
                {"shape": str(list(self.shape)), "entries": f"{entries:,}", "limit": f"{MAX_INPUT_ENTRIES:,}"},
            )
        low, high = self.bounds()
        for name, value in (("low", low), ("high", high)):
            if not math.isfinite(value):
                raise PydanticCustomError(
                    "input_bound", "{name} must be finite, got {value}", {"name": name, "value": value}
                )
            if self.integral and not float(value).is_integer():
                raise PydanticCustomError(
                    "input_bound",
                    "an {dtype} input holds integers: {name} must be a whole number, got {value}",
                    {"dtype": self.dtype, "name": name, "value": value},
                )
        if not low < high:
            raise PydanticCustomError(
                "input_bound",
                "low must be less than high (values are drawn from [low, high)), got low={low}, high={high}",
                {"low": low, "high": high},
            )
        return self

    @property
    def integral(self) -> bool:
        """Whether the dtype holds integers (token ids)."""
        return self.dtype.startswith("int")

    def bounds(self) -> tuple[int | float, int | float]:
        """``(low, high)`` with the defaults filled in."""
        return (0 if self.low is None else self.low), (1 if self.high is None else self.high)

    def describe(self) -> str:
        """``[1, 3, 224, 224] float32`` (with the range when it is not the default)."""
        low, high = self.bounds()
        shown = f"[{', '.join(map(str, self.shape))}] {self.dtype}"
        return shown if (self.low, self.high) == (None, None) else f"{shown} in [{low}, {high})"


def example_tensor(spec: ExampleInput, device: torch.device | str | None = None) -> Tensor:
    """The tensor ``spec`` describes, drawn from a generator seeded alike every time, on ``device``."""
    generator = torch.Generator().manual_seed(_SEED)
    low, high = spec.bounds()
    dtype = _TORCH_DTYPES[spec.dtype]
    if spec.integral:
        tensor = torch.randint(int(low), int(high), spec.shape, generator=generator, dtype=dtype)
    else:
        wide = torch.float64 if dtype == torch.float64 else torch.float32  # not twice the memory for float32
        tensor = (torch.rand(spec.shape, generator=generator, dtype=wide) * (high - low) + low).to(dtype)
    return tensor if device is None else tensor.to(device)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s tensors live (its first parameter or buffer); the CPU for a model without any."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")
