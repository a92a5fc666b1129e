"""The trainer: tokenizer, pretraining, SFT, RL and continued pretraining (issues 4, 6, 8)."""
