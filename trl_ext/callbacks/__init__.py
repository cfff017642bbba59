"""Trainer callbacks: state across steps (loss log and plot, and later SafeLoRA, curriculum, probes)."""

from trl_ext.callbacks.loss_log import LossLogCallback, plot_loss_log, read_loss_log
from trl_ext.callbacks.safelora import SafeLoRACallback

__all__ = ["LossLogCallback", "SafeLoRACallback", "plot_loss_log", "read_loss_log"]
