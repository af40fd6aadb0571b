"""The smallest overrides at which each task runs end to end (seconds), used by the contract
test, the GPU tests and benchmarks/gpu_check.sh. Every task in conf/task/ has an entry."""

TINY: dict[str, list[str]] = {
    "optimizer_scaling": ["task.latent_dim=256", "task.n_train=512", "task.max_features=64",
                          "task.n_features=32", "task.steps=10"],
    "two_step_gd": ["task.n_hidden=64", "task.sv_method=dense"],
    "chefnmr": ["task.max_molecules=40", "task.n_conformers=1", "task.h_points=192",
                "task.dit_blocks=1", "task.hidden=32", "task.embedder_hidden=32",
                "task.embedder_layers=1", "task.steps=3", "task.batch_size=8",
                "task.n_samples=2", "task.sampling_steps=3", "task.eval_targets=3",
                "task.eval_batch=2"],
    "ei_network": ["task.dim=1", "task.n_exc=400"],
    "farad": ["task.iterations=30", "task.debias_start=10", "task.batch_labeled=16",
              "task.hidden=32", "task.log_every=5"],
    "spectral_ssl": ["task.steps=12", "task.probe_max_iter=50"],
    "linearization": ["task.n_train=32", "task.n_test=32", "task.finetune_steps=4",
                      "task.ntk_samples=16", "task.vocab_size=16", "task.seq_len=8",
                      "task.d_model=16", "task.n_layers=2", "task.n_heads=2", "task.d_ff=32",
                      "task.n_topics=2", "task.topic_tokens=8", "task.corpus_docs=600",
                      "task.pretrain_steps=5", "task.lipschitz_samples=1"],
    "mixat": ["task.defense=mixat_gcg", "task.mix_ratio=0.25", "task.gcg_ratio=0.25",
              "task.hole_gate=False", "task.defense_steps=4", "task.batch_size=16",
              "task.test_contexts=2", "task.train_contexts=2", "task.n_utility=64",
              "task.d_model=16", "task.n_layers=1", "task.n_heads=2", "task.d_ff=32",
              "task.pretrain_docs=600", "task.pretrain_steps=5", "task.sft_docs=600",
              "task.sft_steps=3", "task.gcg_steps=2", "task.gcg_candidates=8",
              "task.gcg_train_steps=1", "task.eval_samples=2", "task.pgd_steps=2",
              "task.pgd_eval_steps=2", "task.hessian_k=2", "task.lora_rank=2"],
    "mamba_modulation": ["task.d_model=16", "task.n_layers=1", "task.d_state=4",
                         "task.train_len=16", "task.train_steps=5", "task.batch_size=8",
                         "task.eval_sequences=4", "task.calib_sequences=4",
                         "task.corpus_bytes=200000"],
}

if __name__ == "__main__":  # `python tests/tasks/tiny.py NAME` prints the overrides
    import sys

    print(" ".join(TINY[sys.argv[1]]))
