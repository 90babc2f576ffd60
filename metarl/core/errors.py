"""Errors a user can cause and fix. Scripts print them as one line and exit non-zero, without a traceback."""


class MetaRLError(Exception):
    """Base class: a problem with the user's input, files or run, explained in the message."""


class ConfigError(MetaRLError):
    """An invalid configuration: unknown key, wrong type, out-of-range value, unknown name."""


class CheckpointError(MetaRLError):
    """A checkpoint that is missing, unreadable or does not match the run."""


class WriteError(MetaRLError):
    """A file that could not be written (a missing or read-only directory, a full disk)."""


class RunDirBusy(MetaRLError):
    """Another training holds the run directory."""


class NonFiniteLossError(MetaRLError):
    """A NaN or infinite loss; training stops and the last good checkpoint is kept."""

    def __init__(self, iteration: int, loss: float, checkpoint: str | None):
        kept = (f"; last good checkpoint kept at {checkpoint} (continue with --resume, e.g. with a smaller outer.lr)"
                if checkpoint else "; no checkpoint had been written yet (the same command starts it over)")
        super().__init__(f"non-finite loss ({loss}) at iteration {iteration}{kept}")
        self.iteration, self.value = iteration, loss


class RolloutError(MetaRLError):
    """An environment failed during a rollout (envs.base.EnvFailure); training stops, the last checkpoint kept."""

    def __init__(self, iteration: int, cause: str, checkpoint: str | None):
        kept = (f"; the last checkpoint is kept at {checkpoint} (continue with --resume)" if checkpoint
                else "; no checkpoint had been written yet (the same command starts it over)")
        super().__init__(f"environment failure at iteration {iteration}: {cause}{kept}")
        self.iteration = iteration


class DistributedError(MetaRLError):
    """A torch.distributed collective failed: a rank did not answer within train.dist_timeout_s, or died."""


class TrainingInterrupted(MetaRLError):
    """Ctrl-C or SIGTERM during training: says which checkpoint survived and how to continue (exit 130; 143 when
    stopped by SIGTERM)."""

    exit_code = 130
    #: True on torch.distributed ranks other than 0: every rank stops together, rank 0 alone says so
    quiet = False
