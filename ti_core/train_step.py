"""The optimizer step, guarded: a NaN/inf loss, gradient or vector rolls back to the last good vectors and lowers
the learning rate; with fp16, an overflowing gradient skips the step and halves the loss scale instead.

Spread over processes, the gradients and the loss are summed over them before anything looks at them, so every
process takes the same decision (step, rollback, skip) on the same numbers and the vectors stay equal everywhere."""

from __future__ import annotations

import logging
import math

import torch

from .distributed import World


class GuardedStep:
    def __init__(self, params: list, schedule, config, fp16: bool, world: World = World()):
        self.params, self.schedule, self.world = params, schedule, world
        self.grad_accum, self.max_grad_norm = config.grad_accum, config.max_grad_norm
        self.nan_lr_factor = config.nan_lr_factor
        self.optimizer = torch.optim.AdamW(params, lr=schedule.at(0), weight_decay=config.weight_decay)
        self.lr_scale, self.nan_rollbacks = 1.0, 0
        # fp16 activations can underflow small gradients to zero; scale the loss up (and the gradients back
        # down), as mixed-precision training does. bf16 and fp32 have fp32's range and need no scaling.
        self.loss_scale = 2.0**12 if fp16 else 1.0
        self.good = None  # the last good (vectors, optimizer state); set by remember()

    def lr(self, step: int) -> float:
        """The learning rate of the step after `step` steps."""
        return self.schedule.at(step) * self.lr_scale

    def remember(self) -> None:
        self.good = ([p.detach().clone() for p in self.params], _clone_optimizer_state(self.optimizer.state_dict()))

    def __call__(self, loss_fn, step: int) -> float:
        """One optimizer step over grad_accum calls of `loss_fn`; returns the mean loss (NaN if not taken)."""
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(self.grad_accum):
            loss = loss_fn()
            (loss * self.loss_scale / self.grad_accum).backward()
            total += float(loss.detach()) / self.grad_accum
        if self.world.size > 1:  # the vectors' gradients are n x D numbers: one small all-reduce per step
            summed = torch.tensor([total], dtype=torch.float64)
            self.world.sum_([p.grad for p in self.params] + [summed])
            total = float(summed)
        if self.loss_scale != 1.0:
            for p in self.params:
                p.grad.div_(self.loss_scale)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        if math.isfinite(total) and not torch.isfinite(grad_norm) and self.loss_scale > 1.0:
            # the vectors are untouched, so this is no rollback and the learning rate stays (as AMP does)
            self.loss_scale /= 2
            return float("nan")
        if not (math.isfinite(total) and torch.isfinite(grad_norm)):
            self._rollback(step)
            return float("nan")
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(step)
        self.optimizer.step()
        if not all(torch.isfinite(p).all() for p in self.params):
            self._rollback(step)
            return float("nan")
        self.remember()
        return total

    def _rollback(self, step: int) -> None:
        vectors, optim_state = self.good
        with torch.no_grad():
            for p, v in zip(self.params, vectors):
                p.copy_(v)
        self.optimizer.load_state_dict(_clone_optimizer_state(optim_state))
        self.nan_rollbacks += 1
        self.lr_scale *= self.nan_lr_factor
        logging.getLogger("ti_core").warning(
            f"step {step + 1}: the loss or the gradient was NaN/inf; rolled back to the last good vectors and "
            f"lowered the learning rate to {self.lr_scale:g} x the schedule (rollback {self.nan_rollbacks}).")


def _clone_optimizer_state(state: dict) -> dict:
    return {
        "state": {k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in s.items()}
                  for k, s in state["state"].items()},
        "param_groups": [dict(g) for g in state["param_groups"]],
    }
