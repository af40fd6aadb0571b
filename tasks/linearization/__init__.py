"""Linearization explains fine-tuning (../shared/papers/linearization.md): LoRA vs its linearized twin, the NTK at the pretrained point."""
