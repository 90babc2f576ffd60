"""The LSTM meta-learner (Ravi & Larochelle, "Optimization as a model for few-shot learning", ICLR 2017).

The learner's parameters are the cell state of an LSTM that runs over the adaptation steps, one coordinate
at a time with weights shared by all coordinates. For each task (vmapped over the task batch), with all
parameters flattened into one vector theta and t = 1..steps:

    g_t, L_t = grad and value of L_support(theta_{t-1})
    x_t      = [pre(g_t), pre(L_t)]                        (n, 4)   log/sign preprocessing, p = 10
    h_t      = LSTM_1(x_t, h_{t-1})                        (n, H)   an ordinary coordinate-wise LSTM
    f_t      = sigmoid(W_F [h_t, theta_{t-1}, f_{t-1}] + b_F)        learned forget gate
    i_t      = sigmoid(W_I [h_t, theta_{t-1}, i_{t-1}] + b_I)        learned input gate ("learning rate")
    theta_t  = f_t * theta_{t-1} - i_t * g_t                          cell update, candidate = -gradient

theta_0 (= c_0) is the learned initialisation. meta_loss = mean over tasks of L_query(theta_steps) (or the
weighted steps, as every learner: learners.base).
pre(x) = (log|x| / p, sign x) if |x| >= e^-p else (-1, e^p x)   (Andrychowicz et al. 2016, appendix A).

Like the paper, gradients and losses fed to the meta-learner are treated as inputs (`first_order=True`,
the default): the second derivatives of the learner's loss are dropped. Meta-parameters:
{"theta": learner initialisation, "lstm": the meta-learner's weights}.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.func import grad_and_value

from metarl.algorithms.base import InnerLoopLearner, Objective, normalised_weights
from metarl.algorithms.rules import Algorithm, check_step_loss, step_loss_weights
from metarl.core.executor import TaskExecutor
from metarl.core.params import MetaParams, Params

PREPROCESS_P = 10.0


def preprocess(x: torch.Tensor, p: float = PREPROCESS_P) -> torch.Tensor:
    """(..., ) -> (..., 2): magnitude (log scale, in [-1, ...)) and sign, linear near zero."""
    big = x.abs() >= math.exp(-p)
    magnitude = torch.where(big, torch.log(x.abs().clamp_min(math.exp(-p))) / p, torch.full_like(x, -1.0))
    sign = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([magnitude, sign], dim=-1)


class LSTMMetaLearner(InnerLoopLearner):
    """Ravi & Larochelle's coordinate-wise LSTM optimiser, on the shared learner protocol."""

    def __init__(self, objective: Objective, init_params: Params, inner_steps: int = 5, hidden_size: int = 20,
                 first_order: bool = True, input_bias: tuple[float, float] = (-5.0, -4.0),
                 forget_bias: tuple[float, float] = (4.0, 6.0), seed: int = 0,
                 step_loss_weights: tuple[float, ...] = (), executor: TaskExecutor | None = None):
        super().__init__(objective, init_params, executor)
        self.inner_steps = int(inner_steps)
        self.hidden_size = int(hidden_size)
        self.first_order = bool(first_order)
        self.input_bias, self.forget_bias = input_bias, forget_bias
        self.seed = seed
        self._shapes = {k: v.shape for k, v in self._init.items()}
        self.step_loss_weights = normalised_weights(tuple(step_loss_weights), self.inner_steps)

    def init_meta_params(self) -> MetaParams:
        ref = next(iter(self._init.values()))
        g = torch.Generator().manual_seed(self.seed)
        h = self.hidden_size

        def u(shape, lo, hi):
            return (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)).to(ref)

        lstm = {
            # first layer: an ordinary LSTM over the 4 preprocessed inputs; gate order i, f, g, o
            "w_x": u((4 * h, 4), -0.01, 0.01),
            "w_h": u((4 * h, h), -0.01, 0.01),
            "b": torch.zeros(4 * h).to(ref),
            # second layer: the gates that update the learner's parameters; inputs [h, theta, previous gate]
            "w_f": u((h + 2,), -0.01, 0.01),
            "b_f": u((1,), *self.forget_bias),  # forget gate starts near 1: keep theta
            "w_i": u((h + 2,), -0.01, 0.01),
            "b_i": u((1,), *self.input_bias),  # input gate starts near 0.01: a small learning rate
        }
        return {"theta": {k: v.clone() for k, v in self._init.items()}, "lstm": lstm}

    def _flat(self, params: Params) -> torch.Tensor:
        return torch.cat([params[k].reshape(-1) for k in self._shapes])

    def params(self, meta: MetaParams, state: tuple) -> Params:
        out, i = {}, 0
        for k, shape in self._shapes.items():
            n = shape.numel()
            out[k] = state[0][i : i + n].reshape(shape)
            i += n
        return out

    def start(self, meta: MetaParams) -> tuple:
        """(theta, LSTM hidden h, cell c, previous forget gate f, previous input gate i), theta flat."""
        theta = self._flat(meta["theta"])
        zeros = theta.new_zeros(theta.shape[0], self.hidden_size)
        return theta, zeros, zeros, torch.zeros_like(theta), torch.zeros_like(theta)

    def step(self, meta: MetaParams, state: tuple, data: Any, s: int) -> tuple:
        w, hs = meta["lstm"], self.hidden_size
        theta, h, c, f, i = state
        n = theta.shape[0]
        g, loss = grad_and_value(lambda flat: self.objective.inner_loss(self.params(meta, (flat,)), data))(theta)
        if self.first_order:
            g, loss = g.detach(), loss.detach()
        x = torch.cat([preprocess(g), preprocess(loss).expand(n, 2)], dim=-1)
        gi, gf, gg, go = (x @ w["w_x"].T + h @ w["w_h"].T + w["b"]).split(hs, dim=-1)
        c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
        h = torch.sigmoid(go) * torch.tanh(c)
        f = torch.sigmoid(h @ w["w_f"][:hs] + theta * w["w_f"][hs] + f * w["w_f"][hs + 1] + w["b_f"])
        i = torch.sigmoid(h @ w["w_i"][:hs] + theta * w["w_i"][hs] + i * w["w_i"][hs + 1] + w["b_i"])
        return f * theta - i * g, h, c, f, i


def build(cfg, objective, model, init, executor) -> LSTMMetaLearner:
    L = cfg.learner
    return LSTMMetaLearner(objective, init, inner_steps=L.inner_steps, hidden_size=L.lstm_hidden,
                           first_order=L.first_order, step_loss_weights=step_loss_weights(cfg), executor=executor)


SPEC = Algorithm(name="lstm", title="LSTM meta-learner", build=build, check=lambda cfg, family: check_step_loss(cfg),
                 summary="the LSTM meta-learner: a learned coordinate-wise optimiser (Ravi & Larochelle 2017)",
                 reads=tuple(f"learner.{k}" for k in ("inner_steps", "first_order", "step_loss", "step_loss_weights",
                                                      "lstm_hidden", "estimator")))
