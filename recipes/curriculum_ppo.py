"""PPO with KL control over several datasets sampled by an auto-curriculum (seed 003).

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/curriculum_ppo.py \
        --config recipes/configs/curriculum_ppo_tiny.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/curriculum_ppo.py \
        --config recipes/configs/curriculum_ppo.yaml
    python -m trl_ext.curriculum --config recipes/configs/curriculum_ppo_tiny.yaml   # the same (seed's python -m)

Steps:

1. **Data.** ``curriculum_datasets`` (a list of :class:`~trl_ext.data.multi_dataset.DatasetSpec` dicts, YAML only)
   or, when it is unset, the shipped demo (:func:`~trl_ext.curriculum.demo.make_curriculum_demo`: ``repeat``,
   ``dialog``, ``random``, of increasing difficulty). Every dataset becomes a ``text`` column; the prompt of a row is
   its first ``prompt_chars`` characters (``prompt`` column) and the whole ``text`` stays beside it, so the
   curriculum's frozen model scores the full text. ``subset`` gives a hub configuration name (e.g.
   ``wikitext-103-raw-v1``) and ``min_chars`` drops rows with less text (e.g. Wikitext's blank lines, which the
   loader otherwise refuses).
2. **Optional LM warm-up** (``lm_warmup_steps`` > 0): a short causal-LM fine-tune of every weight on the shuffled
   union of the texts (``trl.SFTTrainer`` on the ``text`` column), saved to ``<output_dir>/warmup_model``, which is
   then PPO's starting policy and reference. An untrained model (the embedded ``tiny`` one) scores every dataset
   alike (≈ 6.4 nats), so the curriculum has nothing to act on; a pretrained model needs no warm-up (0, default).
   A finished warm-up folder is reused (resuming does not retrain it).
3. **PPO** (:class:`~trl_ext.curriculum.trainer.CurriculumPPOTrainer`: trl_ext's PPO with a value head,
   GAE and fixed or adaptive KL control, LoRA by default) on the prompts. The score of a completion is the sum of
   the reward functions (weighted by ``reward_weights`` when given): first the repetition reward

       r_rep = −repetition_coef · #{t ≥ 1 : ids[t] = ids[t−1]}

   over the completion's token ids (consecutive repeated tokens), then every extra ``reward_funcs`` entry. The
   curriculum updates the sampling weights of the datasets from the frozen model's difficulty estimates (see
   :class:`~trl_ext.curriculum.config.CurriculumArguments`).
4. **Test prompts.** At the end of every epoch :class:`~trl_ext.common.sample_table.SampleTableCallback` generates
   a completion for each of ``test_prompts`` (greedy, ``test_max_new_tokens``).
5. **Validation, checkpoints, best model** (defaults ``eval_strategy: epoch``, ``save_strategy: epoch``,
   ``metric_for_best_model: eval_loss``; ``eval_strategy: no`` turns validation off). After every epoch the
   policy's mean token negative log-likelihood on the validation texts (each tokenized as x_0 … x_{n−1}, cut to
   ``validation_max_length`` tokens)

       eval_loss = Σ_texts Σ_{t≥1} −log p_θ(x_t | x_<t) / Σ_texts (n − 1),    eval_perplexity = exp(eval_loss)

   is logged (``eval_loss``, ``eval_perplexity``, ``eval_tokens``), a ``checkpoint-<step>`` is saved, and the model
   is saved to ``best_model/`` whenever ``eval_loss`` is the lowest so far. Validation texts: ``validation_dataset``
   (a source string or, in YAML, a DatasetSpec dict); unset, the demo's own validation split (``validation_rows``
   per dataset, generated with another seed) or, with ``curriculum_datasets``, a held-out ``validation_fraction``
   of each dataset's rows (not trained on).

Outputs in ``output_dir``: the adapter (or model), tokenizer and value head; written by the trainer at the end of
training, ``curriculum.json`` (dataset names, initial and final weights, the curriculum's update history: step,
epoch, frozen_age, weights, difficulty, variance, seconds) and ``curriculum_weights.png`` (weights, and
difficulties, against the step, one line per dataset);
``samples.jsonl`` / ``samples.md`` (test prompt completions per epoch); ``loss_log.csv`` (with the
``curriculum/weight/<name>`` and ``eval_loss`` / ``eval_perplexity`` columns) / ``loss_curve.png``; ``warmup_model/``
after a warm-up; ``checkpoint-<step>/`` per epoch (``save_total_limit`` rotates them, never the best one);
``best_model/`` (adapter or model, tokenizer, value head of the epoch with the lowest ``eval_loss``) and
``best_model.json`` (``metric``, ``best``: epoch, step, eval_loss, eval_perplexity, path, checkpoint; ``history``: one
record per evaluation). The code lives in :mod:`trl_ext.curriculum.recipe`; this file only runs it. Every field of the
three argument classes is a YAML key and a command-line flag (``curriculum_datasets`` only in YAML).
"""

from __future__ import annotations

from trl_ext.common.noise import quiet_dependency_noise

quiet_dependency_noise()  # first: the known-harmless messages of dependencies (trl_ext/common/noise.py)

import sys

from trl_ext.curriculum.recipe import (  # noqa: F401  (the recipe's names, as tests and reward_funcs address them)
    DEFAULT_TEST_PROMPTS,
    RECIPE_DEFAULTS,
    WARMUP_DIR,
    CurriculumPPOArguments,
    ValidatedCurriculumPPOTrainer,
    build_datasets,
    build_validation,
    cli,
    count_repeats,
    lm_warmup,
    main,
    make_parser,
    make_reward_funcs,
    repetition_reward,
)

if __name__ == "__main__":
    sys.exit(cli())
