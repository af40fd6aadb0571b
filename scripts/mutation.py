"""Mutation testing of the spectral math (callbacks/spectra/*.py) and of the tasks' math modules
with mutmut 3, module by module.

    make mutation                                   # every module below, in this order
    .venv/bin/python scripts/mutation.py lanczos --functions _omega_next _PartialReorth.needs_full
    .venv/bin/python scripts/mutation.py powerlaw rmt --max-children 2
    .venv/bin/python scripts/mutation.py optimizer_scaling/solvers two_step_gd/theory

A module is a name of callbacks/spectra (``trace`` = callbacks/spectra/trace.py, tests in
``TESTS``) or ``<task>/<module>`` (``optimizer_scaling/solvers`` = tasks/optimizer_scaling/
solvers.py, tests in ``TASK_TESTS``). ``FUNCTIONS`` restricts a module to its math functions
(``name`` or ``Class.method``): mutmut still generates every mutant of the file, but only those
of the listed functions are run and counted (the rest are not in the table).

For each module the working tree (tracked and untracked, not ignored files) is copied to
``<workdir>/<module>/`` (default /tmp/spectrum-mutation; ``/`` becomes ``+``) and mutmut runs
there, with a ``[tool.mutmut]`` section that mutates only that file and runs only that module's
tests; mutmut 3 writes its mutants to ``mutants/`` inside that copy, so nothing in this
repository is touched (the script checks the hashes of callbacks/ and tasks/ before and after).
Never run ``mutmut apply`` in the repository: it writes a mutant into the source file.

Prints a table (module, mutants, killed, survived, timeout, no tests, not run, score) and
writes it, with each survivor's diff, to ``<workdir>/report.md`` (and ``<module>.json``).
``--rerun-survivors`` reruns only the survivors and timeouts of each module's last run in its
copy (and the mutants it did not reach), against the repository's current tests (after tests were added for
them), and merges the results; ``--resume`` runs only the mutants it did not reach.
Score = (killed + timeout) / (mutants − not run): a timeout is a mutant that made the tests
hang (detected); "no tests" are mutants of code that no selected test runs (not detected);
"not run" are mutants a run stopped by ``--timeout`` did not reach (each run starts afresh:
mutmut 3.3.1 resets its results whenever it regenerates the mutants).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECTRA = "callbacks/spectra"
# the callback test that checks every logged value against the library (the others test the
# schedule, files and plots, and would only slow each mutant down)
CALLBACK_TESTS = "tests/callbacks/test_callbacks.py::test_every_callback_writes_npz_scalars_and_plot"
# the live WeightWatcher comparison (when weightwatcher is installed) repeats the frozen one
# test_every_public_function_has_a_case checks the device tests' coverage, not the math
DESELECT = ("--deselect tests/spectra/test_weights.py::test_against_weightwatcher "
            "--deselect tests/spectra/test_devices.py::test_every_public_function_has_a_case")
DEVICES = "tests/spectra/test_devices.py"  # tensors made on the input's device (pseudo-device)
W = "tests/spectra/test_weights.py"
# module -> the tests that exercise it (files or node ids; the modules with the most math first);
# test_devices.py is added to each (mutmut runs only the cases that call the mutated function)
TESTS: dict[str, list[str]] = {
    "powerlaw": ["tests/spectra/test_powerlaw.py", f"{W}::test_metric_formulas",
                 f"{W}::test_against_frozen_weightwatcher_values"],
    "rmt": ["tests/spectra/test_rmt.py", f"{W}::test_num_spikes_of_a_spiked_random_weight"],
    "weights": [W, "tests/spectra/test_validation.py", CALLBACK_TESTS],
    "summaries": ["tests/spectra/test_summaries.py", "tests/spectra/test_ntk.py::test_ntk_metrics",
                  CALLBACK_TESTS],
    "lanczos": ["tests/spectra/test_lanczos.py", "tests/spectra/test_hessian.py",
                "tests/spectra/test_ntk.py::test_ntk_topk_matches_dense"],
    "trace": ["tests/spectra/test_trace.py", "tests/spectra/test_hessian.py::test_hessian_trace"],
    "hessian": ["tests/spectra/test_hessian.py", CALLBACK_TESTS,
                "tests/callbacks/test_callbacks.py::test_hessian_trace_is_exact_with_three_"
                "products_per_parameter"],
    "ntk": ["tests/spectra/test_ntk.py", "tests/spectra/test_validation.py", CALLBACK_TESTS],
    "covariance": ["tests/spectra/test_covariance.py", CALLBACK_TESTS],
    "dense": ["tests/spectra/test_dense.py", "tests/spectra/test_validation.py",
              f"{W}::test_esd_is_squared_singular_values"],
}
OS = "tests/tasks/test_optimizer_scaling.py"
SSL = "tests/tasks/test_spectral_ssl.py"
FA = "tests/tasks/test_farad.py"
TS = "tests/tasks/test_two_step_gd.py"
EI = "tests/tasks/test_ei_network.py"
LI = "tests/tasks/test_linearization.py"
MX = "tests/tasks/test_mixat.py"
CH = "tests/tasks/test_chefnmr.py"
# <task>/<module> (tasks/<task>/<module>.py) -> its fast unit tests (node ids: no Trainer runs, so
# each mutant runs in seconds; the end-to-end smoke tests of each task stay out)
TASK_TESTS: dict[str, list[str]] = {
    "optimizer_scaling/solvers": [
        f"{OS}::test_one_gd_step_is_eta_times_b_hat_by_hand",
        f"{OS}::test_closed_forms_equal_the_dense_iteration",
        f"{OS}::test_polar_factor_and_schedule_against_independent_formulas",
        f"{OS}::test_natural_gradient_scales_faster_than_gd_at_s_1",
        f"{OS}::test_matrix_sign_steps_downhill_along_the_polar_factor",
        f"{OS}::test_lr_is_chosen_on_the_validation_loss_not_the_test_loss",
        f"{OS}::test_null_mode_step_limit_diag_scaling_and_loss_per_output_by_hand"],
    "spectral_ssl/regularizer": [
        f"{SSL}::test_batch_covariance_is_that_of_the_centred_features",
        f"{SSL}::test_regulariser_against_a_dense_numpy_reference",
        f"{SSL}::test_module_regulariser_averages_the_two_views_against_numpy",
        f"{SSL}::test_regulariser_is_zero_for_a_flat_spectrum_and_positive_otherwise",
        f"{SSL}::test_flat_pr_equals_d_over_pr_minus_one_and_frobenius_its_share",
        f"{SSL}::test_regulariser_is_scale_invariant",
        f"{SSL}::test_gradient_raises_the_effective_rank_of_a_collapsed_batch",
        f"{SSL}::test_penalty_of_a_degenerate_batch_is_zero_with_a_graph",
        f"{SSL}::test_penalty_gates_on_rows_and_per_feature_variance_only",
        f"{SSL}::test_frobenius_of_a_flat_batch_is_zero_to_float64_roundoff"],
    "farad/model": [
        f"{FA}::test_bias_from_a_reference_with_uniform_logits_is_a_no_op",
        f"{FA}::test_pseudo_label_modes",
        f"{FA}::test_ema_update_cosine_lr_and_consistency_loss_by_hand",
        f"{FA}::test_mask_keeps_a_confidence_equal_to_the_threshold_and_the_smoothed_prior"],
    "farad/metrics": [
        f"{FA}::test_metrics",
        f"{FA}::test_mask_keeps_a_confidence_equal_to_the_threshold_and_the_smoothed_prior",
        f"{FA}::test_test_time_debiasing_against_a_hand_computed_confusion_matrix",
        f"{FA}::test_fourier_bias_is_the_stub_at_the_mean_colour"],
    "farad/module": [
        f"{FA}::test_bias_from_logits_by_hand",
        f"{FA}::test_bias_from_a_reference_with_uniform_logits_is_a_no_op",
        f"{FA}::test_test_time_debiasing_against_a_hand_computed_confusion_matrix",
        f"{FA}::test_fourier_bias_is_the_stub_at_the_mean_colour"],
    "two_step_gd/theory": [
        f"{TS}::test_one_step_feature_spike_law_at_interval_midpoints",
        f"{TS}::test_outlier_law_on_the_spec_grid",
        f"{TS}::test_strict_count_of_a_vanishing_alpha2_is_zero",
        f"{TS}::test_counts_equal_a_direct_enumeration_of_the_terms",
        f"{TS}::test_feature_spike_margins_equal_the_spec_values",
        f"{TS}::test_feature_spike_count_equals_a_direct_enumeration"],
    "two_step_gd/measure": [
        f"{TS}::test_top_singular_and_gap_edge_on_a_constructed_spiked_matrix",
        f"{TS}::test_top_singular_triplets_of_a_known_svd_and_the_dense_values",
        f"{TS}::test_gap_edge_boundary_and_minimum_size",
        f"{TS}::test_hadamard_power_overlaps",
        f"{TS}::test_gap_rule_counts_no_outlier_in_pure_bulk_and_every_bbp_spike"],
    "ei_network/theory": [
        f"{EI}::test_outliers_are_the_eigenvalues_of_the_mean_matrix",
        f"{EI}::test_wave_vectors_are_every_integer_vector_of_the_cube",
        f"{EI}::test_bulk_variance_equals_the_row_variance_sum_of_the_drawn_law",
        f"{EI}::test_predicted_frequency_equals_the_linearised_oscillation",
        f"{EI}::test_bulk_formula_reduces_to_the_2d_closed_form",
        f"{EI}::test_theory_rule_on_constructed_spectra",
        f"{EI}::test_theory_fields_rule_boundaries_and_the_nyquist_cap",
        f"{EI}::test_paper_presets_get_the_paper_labels_at_every_size"],
    "ei_network/spectrum": [
        f"{EI}::test_compare_and_the_eigenvalue_helpers_by_hand",
        f"{EI}::test_compare_with_a_zero_theory_radius_is_nan_with_a_reason",
        f"{EI}::test_sparse_bulk_radius_draws_e_and_i_units_in_proportion",
        f"{EI}::test_outliers_are_the_eigenvalues_of_the_mean_matrix"],
    "linearization/kernels": [
        f"{LI}::test_closed_form_is_exact_for_a_linear_model",
        f"{LI}::test_the_weyl_check_flags_a_block_that_is_not_positive_semidefinite",
        f"{LI}::test_task_kernels_equal_explicit_jacobian_contractions",
        f"{LI}::test_condition_numbers_use_eigenvalue_magnitudes_and_the_ridge",
        f"{LI}::test_lipschitz_profile_is_the_mean_and_max_jacobian_change_over_r",
        f"{LI}::test_weyl_check_and_spectrum_numbers_by_hand",
        f"{LI}::test_closed_form_in_float64_from_float32_inputs_and_the_kernel_set_jacobian"],
    "mixat/attacks": [
        f"{MX}::test_projection_keeps_every_token_in_the_ball_and_leaves_inner_tokens_alone",
        f"{MX}::test_pgd_ends_inside_the_ball_with_the_boundary_fraction_of_its_norms",
        f"{MX}::test_alo_is_the_max_over_attacks_per_behaviour_without_the_embedding_attack",
        f"{MX}::test_the_judge_needs_the_compliance_prefix_first_and_the_whole_content",
        f"{MX}::test_gcg_evaluates_its_candidates_in_one_batched_forward_and_lowers_the_loss",
        f"{MX}::test_attack_helpers_at_their_boundaries_by_hand"],
    "chefnmr/edm": [
        f"{CH}::test_preconditioning_reproduces_x0_when_the_network_outputs_the_target",
        f"{CH}::test_edm_coefficients_at_sigma_equal_sigma_data",
        f"{CH}::test_training_sigma_distribution",
        f"{CH}::test_sigma_data_by_hand",
        f"{CH}::test_rotations_are_haar_so3",
        f"{CH}::test_augment_centres_on_valid_atoms_and_keeps_distances",
        f"{CH}::test_rotation_keeps_the_loss_target_consistent",
        f"{CH}::test_smooth_lddt_by_hand",
        f"{CH}::test_masked_mse_by_hand"],
    "chefnmr/metrics": [
        f"{CH}::test_topk_validity_tanimoto",
        f"{CH}::test_kabsch_rmsd_and_amr",
        f"{CH}::test_bond_laplacian"],
    "chefnmr/sampling": [
        f"{CH}::test_edm_schedule_endpoints",
        f"{CH}::test_heun_sampler_lands_on_the_oracle_target_and_the_gaussian_std",
        f"{CH}::test_guidance_formula"],
}
# module -> the only functions whose mutants are run (all of the file's when absent): the math,
# not the Lightning hooks, plotting or I/O of the same file
FUNCTIONS: dict[str, list[str]] = {
    "farad/model": ["ema_update", "cosine_lr", "pseudo_targets", "consistency_loss"],
    "farad/module": ["bias_from_logits"],
    "two_step_gd/measure": ["top_singular", "gap_edge", "overlaps", "hadamard_power_overlaps"],
    "linearization/kernels": ["kernel_set", "spectrum_numbers", "weyl_check",
                              "closed_form_predictions", "lipschitz_profile"],
    "mixat/attacks": ["project", "on_boundary", "judge", "refused", "alo", "epsilon", "pgd",
                      "target_ce"],
}
MODULES = [*TESTS, *TASK_TESTS]


def source_of(module: str) -> str:
    """Return the file that `module` names (callbacks/spectra/<m>.py or tasks/<t>/<m>.py)."""
    return f"tasks/{module}.py" if "/" in module else f"{SPECTRA}/{module}.py"


def tests_of(module: str) -> list[str]:
    """Return the tests mutmut runs for `module` (test_devices.py too for callbacks/spectra)."""
    return [*TASK_TESTS[module]] if "/" in module else [*TESTS[module], DEVICES]


def mutant_globs(module: str) -> list[str]:
    """Return mutmut's name patterns of the mutants of `module`'s listed functions ([] = all)."""
    dotted = source_of(module)[:-3].replace("/", ".")
    out = []
    for name in FUNCTIONS.get(module, []):
        cls, _, func = name.rpartition(".")
        out.append(f"{dotted}.xǁ{cls}ǁ{func}__mutmut_*" if cls else f"{dotted}.x_{func}__mutmut_*")
    return out


def check_functions(module: str) -> None:
    """Raise SystemExit if a name in FUNCTIONS[module] is not defined in the module's file."""
    tree = ast.parse((ROOT / source_of(module)).read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {f"{c.name}.{n.name}" for c in tree.body if isinstance(c, ast.ClassDef)
                for n in c.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    missing = sorted(set(FUNCTIONS.get(module, [])) - defined)
    if missing:
        raise SystemExit(f"{module}: FUNCTIONS names {missing}, not in {source_of(module)}")
# mutmut's CLI, started as `python -c BOOT ...`: not `python -m mutmut` (its trampolines import
# mutmut.__main__, which must not be the running __main__: set_start_method would run twice and
# raise), and with item._nodeid restored, which mutmut 3.3.1 reads and pytest 9 removed
BOOT = """
import _pytest.nodes
if not hasattr(_pytest.nodes.Node, "_nodeid"):
    _pytest.nodes.Node._nodeid = property(lambda self: self.nodeid)
from mutmut.__main__ import cli
cli(prog_name="mutmut")
"""
MUTMUT = [sys.executable, "-c", BOOT]


def tree_files(root: Path) -> list[str]:
    """Return the working tree's files: tracked and untracked, without git-ignored ones."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (root / f).is_file()]


def digest(root: Path, files: list[str]) -> str:
    """Return one sha256 over the given files' names and contents."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.encode())
        h.update((root / f).read_bytes())
    return h.hexdigest()


def copy_tree(dest: Path) -> None:
    """Copy the working tree into `dest` (emptied first)."""
    if dest.exists():
        shutil.rmtree(dest)
    for f in tree_files(ROOT):
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)


def mutmut_section(module: str, copy: Path) -> str:
    """Return the [tool.mutmut] section that mutates only `module` against its tests."""
    target = source_of(module)
    top = target.split("/")[0]  # callbacks or tasks: mutated as a package, all but target kept
    others = sorted(str(p.relative_to(copy)) for p in (copy / top).rglob("*.py")
                    if str(p.relative_to(copy)) != target)
    # also_copy must not name the mutated package: mutmut copies it over the mutants afterwards
    also = [d for d in ("runner/", "callbacks/", "tasks/", "conf/", "scripts/") if d != f"{top}/"]
    return ("[tool.mutmut]\n"
            f"paths_to_mutate = {json.dumps([top + '/'])}\n"
            f"do_not_mutate = {json.dumps(others)}\n"
            f"tests_dir = {json.dumps(tests_of(module))}\n"
            f"also_copy = {json.dumps(also)}\n")


def configure(copy: Path, module: str) -> None:
    """Replace the copy's [tool.mutmut] section (the rest of pyproject.toml stays)."""
    path = copy / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", path.read_text(), flags=re.S)
    path.write_text(text.rstrip("\n") + "\n\n" + mutmut_section(module, copy))


def mutmut_run(copy: Path, names: list[str], max_children: int, timeout_s: int,
               log: Path) -> None:
    """Run `mutmut run` in `copy` (on the mutants matching `names`, all when empty)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTEST_ADDOPTS": f"{os.environ.get('PYTEST_ADDOPTS', '')} {DESELECT}".strip()}
    with open(log, "w") as handle:
        try:
            subprocess.run([*MUTMUT, "run", "--max-children", str(max_children), *names],
                           cwd=copy, env=env, stdout=handle, stderr=subprocess.STDOUT,
                           timeout=timeout_s)
        except subprocess.TimeoutExpired:
            handle.write(f"\n[mutation.py] stopped after {timeout_s} s\n")


def run_module(module: str, workdir: Path, max_children: int, timeout_s: int) -> dict:
    """Run mutmut on one module in its own fresh copy; return its counts and survivors."""
    copy = workdir / module.replace("/", "+")
    copy_tree(copy)
    configure(copy, module)
    began = time.perf_counter()
    mutmut_run(copy, mutant_globs(module), max_children, timeout_s, workdir / f"{copy.name}.log")
    result = read_results(copy, module)
    result["seconds"] = time.perf_counter() - began
    result["survivor_diffs"] = show(copy, result["survivors"])
    (workdir / f"{copy.name}.json").write_text(json.dumps(result, indent=1))
    return result


def rerun_survivors(module: str, workdir: Path, max_children: int, timeout_s: int,
                    only_not_run: bool = False) -> dict:
    """Rerun only the survivors ("survived", "no tests") and timeouts of the module's last run,
    and the mutants it did not reach ("not run", after --timeout), against the
    repository's current tests/ and the module's current test list (both put into its copy;
    the mutated source must be unchanged, or the mutant numbers would not match); the other
    results of that run stand (mutmut regenerates the mutants and resets the file's results,
    so they are merged back). ``only_not_run``: only the mutants the last run did not reach."""
    copy = workdir / module.replace("/", "+")
    meta = copy / "mutants" / f"{source_of(module)}.meta"
    if not meta.exists():
        raise SystemExit(f"{module}: no earlier run in {copy}; run it without --rerun-survivors")
    if (copy / source_of(module)).read_bytes() != (ROOT / source_of(module)).read_bytes():
        raise SystemExit(f"{module}: {source_of(module)} changed since the run; run it anew")
    data = json.loads(meta.read_text())
    last = read_results(copy, module)
    # a timeout on a loaded machine may be a slow run of the tests, not a hang: run it again
    names = (last["unchecked"] if only_not_run
             else last["survivors"] + last["timeouts"] + last["unchecked"])
    shutil.rmtree(copy / "tests")
    for f in tree_files(ROOT):
        if f.startswith("tests/"):
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, copy / f)
    configure(copy, module)  # the module's current list of tests
    # mutmut's incremental stats only trace tests it has not seen, and counts the deselected
    # (slow, gpu) ones as unseen: with no other new test it fails; trace them all afresh
    (copy / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    began = time.perf_counter()
    if names:
        mutmut_run(copy, names, max_children, timeout_s, workdir / f"{copy.name}.rerun.log")
        again = json.loads(meta.read_text())["exit_code_by_key"]
        data["exit_code_by_key"].update({n: again.get(n) for n in names})
        meta.write_text(json.dumps(data, indent=4))
    result = read_results(copy, module)
    result["seconds"] = time.perf_counter() - began
    result["rerun"] = len(names)
    result["survivor_diffs"] = show(copy, result["survivors"])
    (workdir / f"{copy.name}.json").write_text(json.dumps(result, indent=1))
    return result


def read_results(copy: Path, module: str) -> dict:
    """Return counts by status from mutmut's meta file of the module."""
    from mutmut.__main__ import status_by_exit_code

    meta = copy / "mutants" / f"{source_of(module)}.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    globs = mutant_globs(module)
    if globs:  # only the listed functions' mutants were run
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in globs)}
    statuses = {name: status_by_exit_code.get(code, str(code)) for name, code in codes.items()}
    count = {s: sum(1 for v in statuses.values() if v == s)
             for s in ("killed", "survived", "timeout", "no tests", "not checked")}
    survivors = sorted(n for n, s in statuses.items() if s in ("survived", "no tests"))
    unchecked = sorted(n for n, s in statuses.items() if s == "not checked")
    timeouts = sorted(n for n, s in statuses.items() if s == "timeout")
    return {"module": module, "mutants": len(statuses), **count, "survivors": survivors,
            "unchecked": unchecked, "timeouts": timeouts}


def show(copy: Path, names: list[str]) -> dict[str, str]:
    """Return {mutant: the changed lines of its function} from the mutants file (parsed once
    with ast; mutmut's own `show` reparses the whole file with libcst for every mutant)."""
    by_file: dict[Path, list[str]] = {}
    for name in names:
        module_path = name.partition("__mutmut_")[0].rpartition(".")[0].replace(".", "/") + ".py"
        by_file.setdefault(copy / "mutants" / module_path, []).append(name)
    out = {}
    for path, members in by_file.items():
        source = path.read_text()
        lines = source.splitlines()
        funcs = {node.name: "\n".join(lines[node.lineno - 1:node.end_lineno])
                 for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)}
        for name in members:
            local = name.rsplit(".", 1)[-1]  # x_<function>__mutmut_<n> (or ...ǁ<method>...)
            base = local.rsplit("__mutmut_", 1)[0]
            orig = funcs.get(base + "__mutmut_orig", "").replace(base + "__mutmut_orig", "f")
            mutant = funcs.get(local, "").replace(local, "f")
            diff = difflib.unified_diff(orig.splitlines(), mutant.splitlines(), lineterm="", n=0)
            out[name] = "\n".join(line for line in diff
                                  if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    return out


def score(r: dict) -> float:
    """Return (killed + timeout) / (mutants checked) in percent (NaN when none was checked)."""
    checked = r["mutants"] - r["not checked"]
    return 100.0 * (r["killed"] + r["timeout"]) / checked if checked else float("nan")


def table(results: list[dict]) -> str:
    """Return the markdown table of the results."""
    lines = ["| module | mutants | killed | survived | timeout | no tests | not run | score |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['survived']} | "
                     f"{r['timeout']} | {r['no tests']} | {r['not checked']} | "
                     f"{score(r):.1f}% |")
    return "\n".join(lines)


def write_report(results: list[dict], workdir: Path) -> Path:
    """Write the table and every survivor's diff to <workdir>/report.md; return its path."""
    parts = [f"# mutmut on {SPECTRA} and tasks/ ({date.today().isoformat()})", "", table(results),
             ""]
    for r in results:
        for name, diff in r["survivor_diffs"].items():
            parts += [f"## {name}", "", "```diff", diff, "```", ""]
    path = workdir / "report.md"
    path.write_text("\n".join(parts))
    return path


def main() -> None:
    """Parse the arguments, run each module, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=[],
                        help=f"modules of {SPECTRA} or <task>/<module> of tasks/ "
                             f"(default: {' '.join(MODULES)})")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/spectrum-mutation"))
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per module")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="rerun only the last run's survivors (and not-run mutants) of each "
                             "module in its copy, against the current tests")
    parser.add_argument("--resume", action="store_true",
                        help="run only the mutants a timed-out run did not reach (in its copy)")
    parser.add_argument("--functions", nargs="+", metavar="NAME",
                        help="run only these functions' mutants (name or Class.method) of the "
                             "one module given, instead of its FUNCTIONS entry")
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown modules {unknown}; allowed: {MODULES}")
    if args.functions:
        if len(args.modules) != 1:
            parser.error("--functions needs exactly one module")
        FUNCTIONS[args.modules[0]] = args.functions
    for module in args.modules or MODULES:
        check_functions(module)
    if args.workdir.resolve().is_relative_to(ROOT):
        parser.error("--workdir must be outside the repository (mutmut writes there)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    watched = [f for f in tree_files(ROOT) if f.startswith(("callbacks/", "tasks/"))]
    before = digest(ROOT, watched)
    results = []
    for module in args.modules or MODULES:
        if args.rerun_survivors or args.resume:
            results.append(rerun_survivors(module, args.workdir, args.max_children, args.timeout,
                                           only_not_run=args.resume and not args.rerun_survivors))
        else:
            results.append(run_module(module, args.workdir, args.max_children, args.timeout))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    if digest(ROOT, watched) != before:
        print("warning: callbacks/ or tasks/ changed in the repository during the run "
              "(another edit?)")
    print()
    print(table(results))
    print(f"\nreport with the survivors' diffs: {write_report(results, args.workdir)}")


if __name__ == "__main__":
    main()
