#!/usr/bin/env python
"""CPU time of one training update, full fine-tune against a LoRA adapter (mlpl.adapters; docs/design.md §6,
"Per-language adapters"), on a stage-1 model and real batches of one language (~30 s of audio each, the demo's
max_batch_seconds), in interleaved rounds so both see the same machine load; the first round warms up.

    python benchmarks/bench_adapters.py --base outputs/demo_recipe/stages/1_multilingual/best \
        --data outputs/demo_recipe/corpus/cv --language el --rank 8

Prints, per variant, CPU seconds per update (`time.process_time`: robust to other processes on the machine)
and the trainable / total parameter counts.
"""

import argparse
import json
import time

import torch

from modeling_mlpl import MlplForCTC, MlplProcessor
from mlpl.adapters import add_training_adapter, parameter_counts
from mlpl.collate import MlplCollator
from mlpl.config import AdapterConfig, SourceConfig
from mlpl.sources import load_source
from mlpl.trainer import MODEL_INPUTS

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="outputs/demo_recipe/stages/1_multilingual/best", help="stage-1 model folder")
    parser.add_argument("--data", default="outputs/demo_recipe/corpus/cv", help="Common Voice layout folder")
    parser.add_argument("--language", default="el")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (the first warms up)")
    parser.add_argument("--updates", type=int, default=5, help="updates per variant and round")
    arguments = parser.parse_args()
    base, rounds, per_round = arguments.base, arguments.rounds, arguments.updates
    torch.manual_seed(0)
    processor = MlplProcessor.from_pretrained(base)
    dataset = load_source(SourceConfig(kind="common_voice", path=arguments.data, split="train", languages=[arguments.language]))
    models = {"full": MlplForCTC.from_pretrained(base)}
    settings = AdapterConfig(enabled=True, rank=arguments.rank, alpha=2.0 * arguments.rank)
    models["adapter"] = add_training_adapter(MlplForCTC.from_pretrained(base), settings, base)
    collator = MlplCollator(processor.feature_extractor, processor.tokenizer, {c: i for i, c in enumerate(models["full"].config.language_codes)})
    examples = [dataset[i] for i in range(len(dataset))]
    batches, batch, seconds = [], [], 0.0
    for example in examples:  # ~30 s of audio per batch, the demo's max_batch_seconds
        batch.append(example)
        seconds += float(example["duration"])
        if seconds >= 30:
            batches.append(collator(batch))
            batch, seconds = [], 0.0
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for name, m in models.items()}
    cpu = {name: 0.0 for name in models}
    for round_index in range(rounds):
        for name, model in models.items():
            model.train()
            start = time.process_time()
            for step in range(per_round):
                inputs = {k: batches[(round_index * per_round + step) % len(batches)][k] for k in MODEL_INPUTS}
                loss = model(**inputs).loss
                loss.backward()
                optimizers[name].step()
                optimizers[name].zero_grad(set_to_none=True)
            if round_index > 0:  # the first round warms up
                cpu[name] += time.process_time() - start
    updates = (rounds - 1) * per_round
    result = {name: {"cpu_seconds_per_update": cpu[name] / updates, **parameter_counts(models[name])} for name in models}
    result["batches"] = len(batches)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
