"""Unified fine-tuning of M3 models with self-knowledge distillation (BGE-M3, arXiv 2402.03216)."""
