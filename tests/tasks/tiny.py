"""The smallest overrides at which each task runs end to end (seconds), used by the contract
test, the GPU tests and benchmarks/gpu_check.sh. Every task in conf/task/ has an entry."""

TINY: dict[str, list[str]] = {
    "optimizer_scaling": ["task.latent_dim=256", "task.n_train=512", "task.max_features=64",
                          "task.n_features=32", "task.steps=10"],
    "two_step_gd": ["task.n_hidden=64", "task.sv_method=dense"],
    "ei_network": ["task.dim=1", "task.n_exc=400"],
    "farad": ["task.iterations=30", "task.debias_start=10", "task.batch_labeled=16",
              "task.hidden=32", "task.log_every=5"],
    "spectral_ssl": ["task.steps=12", "task.probe_max_iter=50"],
}

if __name__ == "__main__":  # `python tests/tasks/tiny.py NAME` prints the overrides
    import sys

    print(" ".join(TINY[sys.argv[1]]))
