"""One module per trainer: a config dataclass and a thin trainer subclass."""
