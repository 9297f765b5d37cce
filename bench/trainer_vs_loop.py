"""Per-step time: the Hugging Face Trainer against a plain torch loop, same model, batch and optimizer.

Run inside a generated project's environment (bench/train.py does). A small DistilBERT (dim 256, 4 layers,
random weights), batch 16 x 128 tokens, AdamW, CPU. Prints one line with both figures and their ratio.
"""

import time

import torch
from datasets import Dataset
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

STEPS, WARMUP, BATCH, LENGTH = 30, 5, 16, 128


def model() -> DistilBertForSequenceClassification:
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=4000, dim=256, hidden_dim=1024, n_layers=4, n_heads=4, num_labels=2)
    return DistilBertForSequenceClassification(config)


def batches() -> Dataset:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 4000, (BATCH * STEPS, LENGTH), generator=generator)
    labels = torch.randint(0, 2, (BATCH * STEPS,), generator=generator)
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * LENGTH] * len(ids), "labels": labels.tolist()}
    )


class StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.times.append(time.perf_counter())


def trainer_step_time(data: Dataset) -> float:
    clock = StepClock()
    args = TrainingArguments(
        output_dir="/tmp/bench-trainer",
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=5e-5,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    Trainer(model=model(), args=args, train_dataset=data, callbacks=[clock]).train()
    return (clock.times[-1] - clock.times[WARMUP - 1]) / (STEPS - WARMUP)


def loop_step_time(data: Dataset) -> float:
    net = model()
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-5, fused=True)  # the Trainer's default (adamw_torch_fused)
    data = data.with_format("torch")
    times = []
    net.train()
    for start in range(0, BATCH * STEPS, BATCH):
        batch = data[start : start + BATCH]
        loss = net(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)  # the Trainer clips too
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter())
    return (times[-1] - times[WARMUP - 1]) / (STEPS - WARMUP)


if __name__ == "__main__":
    data = batches()
    # Interleaved, best of two each: a busy machine slows whichever runs at the wrong moment.
    loop = min(loop_step_time(data), loop_step_time(data))
    trainer = min(trainer_step_time(data), trainer_step_time(data))
    print(
        f"per step (batch {BATCH}x{LENGTH}, CPU): Trainer {trainer * 1000:.0f} ms, plain loop {loop * 1000:.0f} ms, "
        f"ratio {trainer / loop:.2f}"
    )
