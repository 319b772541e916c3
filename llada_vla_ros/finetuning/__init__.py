"""Fine-tuning at scale, on Hugging Face Accelerate (``accelerate launch``).

- loop.py: ``fit`` (the one training loop: DDP / FSDP / DeepSpeed ZeRO-3 through
  Accelerate, bf16, gradient checkpointing, accumulation to a global batch, training
  checkpoints and bit-for-bit resume) and ``RECIPES`` (the paper's recipe by name);
- lora.py: LoRA adapters with peft, merged into the weights on save;
- plan.py: per-GPU memory of full fine-tuning and LoRA for a model size and GPU count.

``llada-vla-train`` (finetune.py) is the command line over these.
"""
