"""The supervised objective: the loss of one task's data under given parameters (the network's pure `call`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metarl.core.params import Metrics, Params
from metarl.nets.functional import pure

Data = tuple[torch.Tensor, torch.Tensor]


class SupervisedObjective:
    """MSE (regression) or cross-entropy (classification) of `model` on (x, y); one task, no task dim.

    Query data may carry the task's support inputs as a third element, (x, y, support_x): the model then
    normalises with the support set's statistics (`ConvNet(reference_rows=...)`, the non-transductive
    protocol) instead of the query batch's own."""

    def __init__(self, model: nn.Module, loss: str = "mse"):
        if loss not in ("mse", "cross_entropy"):
            raise ValueError(f"unknown loss {loss!r}: expected 'mse' or 'cross_entropy'")
        self.model = model
        self.loss = loss
        #: the network as a pure function of its parameters: its own call(params, x), or derived from its layers
        self.call = model.call if hasattr(model, "call") else pure(model)

    def predict(self, params: Params, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        if reference is None:
            return self.call(params, x)
        r = reference.shape[0]
        return self.call(params, torch.cat([reference, x]), reference_rows=r)[r:]

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, y) if self.loss == "mse" else F.cross_entropy(out, y)

    def example_losses(self, params: Params, data: Data) -> torch.Tensor:
        """The loss of each example of (x, y): a vector (metarl.algorithms.reweight weighs them)."""
        x, y = data
        out = self.predict(params, x)
        if self.loss == "cross_entropy":
            return F.cross_entropy(out, y, reduction="none")
        return F.mse_loss(out, y, reduction="none").reshape(out.shape[0], -1).mean(-1)

    def inner_loss(self, params: Params, data: Data) -> torch.Tensor:
        x, y = data
        return self._loss(self.predict(params, x), y)

    def outer_loss(self, params: Params, data: Data) -> tuple[torch.Tensor, Metrics]:
        x, y, *reference = data
        out = self.predict(params, x, *reference)
        loss = self._loss(out, y)
        if self.loss == "cross_entropy":
            return loss, {"accuracy": (out.argmax(-1) == y).to(out.dtype).mean()}
        return loss, {}

    def metrics(self, params: Params, data: Data) -> Metrics:
        loss, metrics = self.outer_loss(params, data)
        return {"loss": loss, **metrics}
