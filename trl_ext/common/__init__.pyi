from .checkpoint import ExtensionStateMixin, resolve_checkpoint
from .config import ExtensionArguments, bf16_supported
from .errors import (
    ConfigError,
    DataError,
    InputTypeError,
    MissingPathError,
    ReturnValueError,
    UnknownNameError,
    UserInputError,
    warn_at_caller,
)
from .generation import generate_completions, unwrap_model
from .imports import import_function
from .lm_head_tiles import LMHeadTileArguments, LMHeadTileMixin
from .logprobs import sequence_logps
from .loss_log import LossLogCallback, plot_loss_log, read_loss_log
from .sample_table import SampleTableCallback, format_sample_table
