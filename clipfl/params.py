"""Model parameters as one flat float32 vector, in a fixed order.

Everything that travels or is aggregated is a model *state*: the float tensors of
``module.state_dict()`` (parameters and float buffers such as BatchNorm running statistics), in the
order ``state_dict`` gives. Integer buffers (``num_batches_tracked``) are local bookkeeping and are
never sent. ``ParamSpec`` fixes names, shapes and offsets so that a flat vector (what secure
aggregation sums) and named tensors (what the wire carries) convert both ways without copies where
possible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ParamSpec", "State", "load_state", "state_of"]

State = dict[str, np.ndarray]
"""Named float32 arrays, in ``state_dict`` order."""


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """Names, shapes and offsets of the float tensors of a model's state."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, module: torch.nn.Module) -> ParamSpec:
        items = [(k, tuple(v.shape)) for k, v in module.state_dict().items() if v.is_floating_point()]
        return cls(tuple(k for k, _ in items), tuple(s for _, s in items))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.cumsum((0, *self.sizes))[:-1])

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def flatten(self, state: Mapping[str, np.ndarray]) -> np.ndarray:
        """Concatenate ``state`` into one float32 vector in spec order."""
        return np.concatenate([np.asarray(state[n], dtype=np.float32).reshape(-1) for n in self.names])

    def unflatten(self, vector: np.ndarray) -> State:
        """Split a flat vector into named arrays (views into ``vector``)."""
        if vector.shape != (self.size,):
            raise ValueError(f"vector has shape {vector.shape}, the model needs ({self.size},)")
        return {
            n: vector[o : o + z].reshape(s)
            for n, s, o, z in zip(self.names, self.shapes, self.offsets, self.sizes, strict=True)
        }

    def check(self, state: Mapping[str, np.ndarray]) -> None:
        """Raise ``ValueError`` unless ``state`` has exactly this spec's names and shapes."""
        if tuple(state) != self.names:
            missing = set(self.names) - set(state)
            extra = set(state) - set(self.names)
            raise ValueError(
                f"state tensors differ from the model: missing {sorted(missing)}, extra {sorted(extra)}"
            )
        for n, s in zip(self.names, self.shapes, strict=True):
            if tuple(state[n].shape) != s:
                raise ValueError(f"tensor {n!r} has shape {tuple(state[n].shape)}, the model needs {s}")


def state_of(module: torch.nn.Module) -> State:
    """The module's float state as float32 NumPy arrays (copies, detached from the module)."""
    return {
        k: v.detach().to(torch.float32).cpu().numpy().copy()
        for k, v in module.state_dict().items()
        if v.is_floating_point()
    }


def load_state(module: torch.nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Copy ``state`` into the module's float tensors in place (integer buffers untouched).

    ``torch.tensor`` copies, so arrays decoded read-only from a message load without PyTorch's
    non-writable-array warning (``torch.from_numpy`` would share their memory)."""
    own = module.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(torch.tensor(np.asarray(value), dtype=own[name].dtype))
