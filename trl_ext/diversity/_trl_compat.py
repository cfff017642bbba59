"""The diversity family's couplings to TRL internals (checked against TRL 1.16 by ``tests/test_trl_compat.py``).

``DiversityTrainer`` subclasses ``trl.GRPOTrainer`` and relies on:

* ``grpo_rollout_methods``: it overrides ``_generate_single_turn(prompt_ids, images, multimodal_fields,
  num_generations, ...) -> (completion_ids, logprobs)`` (lists per completion, cut at the stop strings before
  ``_generate`` decodes them and measures their lengths), ``_generate_and_score_completions(inputs)`` (whose output
  dict has ``prompt_ids``, ``prompt_mask``, ``completion_ids``, ``completion_mask``, ``num_items_in_batch`` and, with
  ``beta != 0``, ``ref_per_token_logps``; extra batch-first tensors survive ``_prepare_inputs``' shuffle and split)
  and ``_compute_loss(model, inputs)``; it calls ``_get_per_token_logps_and_entropies`` (no-grad scoring and the
  teacher-forced forward), ``_generate(prompts)`` (prefill: its second result is the completion ids) and
  ``_tokenize_prompts(prompts)`` (prompt lengths; its first result is the prompt ids);
"""

from __future__ import annotations

from trl_ext.common._trl_compat import Coupling, require_params, require_source

__all__ = ["COUPLINGS"]


def _check_rollout_methods() -> None:
    from trl import GRPOTrainer

    name = "grpo_rollout_methods"
    require_params(
        name, GRPOTrainer._generate_single_turn, ("prompt_ids", "images", "multimodal_fields", "num_generations")
    )
    require_source(name, GRPOTrainer._generate_single_turn, (r"return completion_ids, logprobs",))
    require_source(name, GRPOTrainer._generate, (r"completion_ids, logprobs = self\._generate_single_turn\(",))
    require_source(name, GRPOTrainer._generate, (r"return prompt_ids, completion_ids, ",))
    require_params(name, GRPOTrainer._generate_and_score_completions, ("inputs",))
    require_params(name, GRPOTrainer._compute_loss, ("model", "inputs"))
    require_params(
        name,
        GRPOTrainer._get_per_token_logps_and_entropies,
        ("model", "input_ids", "attention_mask", "logits_to_keep", "batch_size"),
    )
    require_source(name, GRPOTrainer._tokenize_prompts, (r"return prompt_ids, ",))
    require_source(
        name,
        GRPOTrainer._generate_and_score_completions,
        tuple(
            rf'"{key}"'
            for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "num_items_in_batch")
        )
        + (r'output\["ref_per_token_logps"\] = ref_per_token_logps',),
    )


COUPLINGS = (
    Coupling(
        "grpo_rollout_methods",
        "trl.GRPOTrainer._generate_single_turn / _generate / _generate_and_score_completions / _compute_loss / "
        "_get_per_token_logps_and_entropies / _tokenize_prompts",
        _check_rollout_methods,
    ),
)
