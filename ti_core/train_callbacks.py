"""What the training loop calls around its steps (as minGPT's trainer does): validation and early stop, saves,
previews and reporting. Each reads the trainer and writes what it did into `trainer.events` for the step."""

from __future__ import annotations

import logging
import time


class Callback:
    def on_run_start(self, trainer) -> None:
        pass

    def on_step_end(self, trainer) -> None:
        pass

    def on_run_end(self, trainer) -> None:
        pass


class Validation(Callback):
    """A loss on fixed draws every `validate_every` steps and at the end; early stop when it stops improving."""

    SEED_OFFSET = 7919  # validation draws differ from every training draw of the same seed

    def __init__(self, config):
        self.config = config

    def measure(self, trainer) -> float:
        loss = trainer.loss.fixed(trainer.word_vectors(), self.config.validation_samples,
                                  self.config.seed + self.SEED_OFFSET)
        trainer.val_losses.append((trainer.step, loss))
        return loss

    def on_run_start(self, trainer) -> None:
        if not trainer.val_losses:
            self.measure(trainer)  # step 0: the init vectors' loss, the baseline every later value compares with

    def on_step_end(self, trainer) -> None:
        config = self.config
        if not validates_at(config, trainer.step):
            return
        trainer.events.val_loss = self.measure(trainer)
        scores = [score for _, score in trainer.picture_scores]
        # every process has the same losses (summed) and draws the same pictures; `any` keeps them in step even if
        # an accelerator's arithmetic made one process's pictures differ
        if trainer.world.any(finished([loss for _, loss in trainer.val_losses], scores, config.early_stop,
                                      config.early_stop_fraction)):
            trainer.outcome = "early_stop"
            what = "lowered the loss nor raised the pictures' likeness" if scores else "lowered the loss"
            logging.getLogger("ti_core").info(
                f"early stop at step {trainer.step}: {config.early_stop} validations {what} by as much as "
                f"{config.early_stop_fraction:.0%} of its change since the start")


def validates_at(config, step: int) -> bool:
    """Whether a validation (and, with picture checks, a check) is made after `step`: every validate_every, and at
    the last step."""
    return step % config.validate_every == 0 or step == config.steps


def plateaued(losses: list, patience: int, fraction: float) -> bool:
    """The last `patience` validations lowered the best loss before them by at most `fraction` of that best's fall
    from the first loss: the word has stopped learning, measured against what it has learned so far."""
    if not patience or len(losses) <= patience:
        return False
    best = min(losses[:-patience])
    return best - min(losses[-patience:]) <= fraction * max(0.0, losses[0] - best)


def finished(losses: list, scores: list, patience: int, fraction: float) -> bool:
    """Early stop's decision after a validation: the loss has stopped falling and, with picture checks (`scores`,
    the likeness at the same steps as `losses`), the likeness has stopped rising too, by the same test. Either alone
    ended runs too soon across the toy world: the loss while the word still swung, the likeness on a flat stretch
    before a late jump (README, "When is it done?")."""
    loss_done = plateaued(losses, patience, fraction)
    if not scores:
        return loss_done
    return loss_done and plateaued([-score for score in scores], patience, fraction)


def plateau_step(val_losses: list, patience: int, fraction: float, picture_scores: list = ()) -> int | None:
    """The step at which early stop ends a run with these (step, validation loss) pairs (the first is step 0's, the
    init vectors') and, with picture checks, (step, likeness) pairs at the same steps; None when it never does:
    `finished` evaluated at each validation in turn."""
    scores = dict(picture_scores)
    for i, (step, _) in enumerate(val_losses):
        seen = val_losses[:i + 1]
        if finished([loss for _, loss in seen], [scores[s] for s, _ in seen if s in scores], patience, fraction):
            return step
    return None


class Saver(Callback):
    """The embedding and resume state every `save_every` steps (not at the last step: the run's end saves)."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, trainer) -> None:
        if (self.every and trainer.step % self.every == 0 and trainer.step < trainer.config.steps
                and trainer.outcome is None):
            saved = trainer.save()
            trainer.events.saved = str(saved) if saved else None

    def on_run_end(self, trainer) -> None:
        trainer.saved_path = trainer.save()


class Preview(Callback):
    """A picture of config.preview_prompt (fixed seed, so previews compare) every `preview_every` steps."""

    def __init__(self, config, resolution: int):
        self.config, self.resolution = config, resolution

    def on_step_end(self, trainer) -> None:
        if trainer.step % self.config.preview_every == 0:
            trainer.events.preview = self.draw(trainer)

    def draw(self, trainer):
        from . import templates
        from .embeddings import Embedding
        from .prompt import encode_pair
        from .sample import sample

        config = self.config
        emb = Embedding(config.name, trainer.vector_dict())
        prompt = templates.render(config.preview_prompt, f"embedding:{config.name}")
        positive, negative = encode_pair(trainer.model, prompt, "", [emb])
        return sample(trainer.model, positive, negative, steps=config.preview_steps, seed=config.preview_seed,
                      width=self.resolution, height=self.resolution)


class Reporter(Callback):
    """Calls the caller's on_step with a StepInfo after every step."""

    def __init__(self, on_step):
        self.on_step = on_step
        self.started, self.first_step = time.perf_counter(), 0

    def on_run_start(self, trainer) -> None:
        self.started, self.first_step = time.perf_counter(), trainer.step

    def on_step_end(self, trainer) -> None:
        from .train import StepInfo

        steps, step = trainer.config.steps, trainer.step
        elapsed = time.perf_counter() - self.started
        events = trainer.events
        self.on_step(StepInfo(
            step=step, steps=steps, loss=trainer.last_loss,
            smoothed_loss=trainer.smoothed if trainer.smoothed is not None else float("nan"),
            lr=trainer.guard.lr(step - 1),
            vector_norms=[v.detach().norm(dim=1).tolist() for v in trainer.word_vectors()],
            elapsed=elapsed, eta=elapsed / (step - self.first_step) * (steps - step),
            nan_rollbacks=trainer.guard.nan_rollbacks, preview=events.preview, saved=events.saved,
            val_loss=events.val_loss, vectors=trainer.vector_dict(), picture_score=events.picture_score,
        ))
