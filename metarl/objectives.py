"""The supervised objective: the loss of one task's data under given parameters, through functional_call."""
from __future__ import annotations

import copy
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metarl.params import Metrics, Params

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
        self.buffers = {k: v for k, v in model.named_buffers()}
        self._local = threading.local()

    def _module(self) -> nn.Module:
        """self.model, or this thread's copy of it: functional_call swaps a module's parameters while it runs,
        so tasks on several threads (task_batching threads) must not share one module."""
        if threading.current_thread() is threading.main_thread():
            return self.model
        copied = getattr(self._local, "model", None)
        if copied is None or copied[0] is not self.model:
            copied = self._local.model = (self.model, copy.deepcopy(self.model))
        return copied[1]

    def predict(self, params: Params, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        model, params = self._module(), {**params, **self.buffers}
        if reference is None:
            return functional_call(model, params, (x,))
        r = reference.shape[0]
        return functional_call(model, params, (torch.cat([reference, x]),), {"reference_rows": r})[r:]

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, y) if self.loss == "mse" else F.cross_entropy(out, y)

    def example_losses(self, params: Params, data: Data) -> torch.Tensor:
        """The loss of each example of (x, y): a vector (metarl.learners.reweight weighs them)."""
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
