"""The latent family's couplings to transformers internals (checked against transformers 5.24 by
``tests/test_trl_compat.py``).

``LatentCommTrainer`` subclasses ``transformers.Trainer`` (TRL's trainers return no logits from their fused heads)
and relies on:

* ``trainer_batch_counts``: ``Trainer.get_batch_samples`` counts the accumulated batch with
  ``self._get_num_items_in_batch(batch_samples, device)``, which the trainer overrides to keep the rows and the plan
  rows' counts too, and ``training_step`` divides the loss by the accumulation steps unless
  ``self.loss_is_scaled_for_ga`` (set True: the loss is normalised over the whole accumulated batch);
* ``trainer_weights_io``: it overrides ``_save(output_dir, state_dict)`` (the LM with ``save_pretrained``, the adapter
  beside it), ``_load_from_checkpoint(resume_from_checkpoint, model)`` and ``_load_best_model()`` (outside DeepSpeed
  and FSDP), and writes ``transformers.trainer.TRAINING_ARGS_NAME``;
* ``trainer_prediction_step``: it overrides ``prediction_step(model, inputs, prediction_loss_only, ignore_keys)`` to
  return ``(loss, None, None)`` (no logits gathered at evaluation).
"""

from __future__ import annotations

from trl_ext.common._trl_compat import Coupling, require_params, require_source

__all__ = ["COUPLINGS"]


def _check_batch_counts() -> None:
    from transformers import Trainer

    name = "trainer_batch_counts"
    require_params(name, Trainer._get_num_items_in_batch, ("batch_samples", "device"))
    require_source(name, Trainer.get_batch_samples, (r"self\._get_num_items_in_batch\(batch_samples, device\)",))
    require_source(name, Trainer.training_step, (r"self\.loss_is_scaled_for_ga",))


def _check_weights_io() -> None:
    from transformers import Trainer
    from transformers.trainer import TRAINING_ARGS_NAME

    name = "trainer_weights_io"
    assert isinstance(TRAINING_ARGS_NAME, str)
    require_params(name, Trainer._save, ("output_dir", "state_dict"))
    require_params(name, Trainer._load_from_checkpoint, ("resume_from_checkpoint", "model"))
    require_source(name, Trainer._save_checkpoint, (r"self\.save_model\(",))
    require_source(name, Trainer.save_model, (r"self\._save\(",))
    require_source(name, Trainer._load_best_model, (r"best_model_checkpoint",))


def _check_prediction_step() -> None:
    from transformers import Trainer

    require_params(
        "trainer_prediction_step", Trainer.prediction_step, ("model", "inputs", "prediction_loss_only", "ignore_keys")
    )


COUPLINGS = (
    Coupling(
        "trainer_batch_counts",
        "transformers.Trainer.get_batch_samples / _get_num_items_in_batch / training_step (loss_is_scaled_for_ga)",
        _check_batch_counts,
    ),
    Coupling(
        "trainer_weights_io",
        "transformers.Trainer._save / _load_from_checkpoint / _load_best_model / save_model / TRAINING_ARGS_NAME",
        _check_weights_io,
    ),
    Coupling("trainer_prediction_step", "transformers.Trainer.prediction_step", _check_prediction_step),
)
