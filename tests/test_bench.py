import json
import math

import pytest

from diffkit import registry
from diffkit.bench import TIERS, discover_tasks, run_bench
from diffkit.recipe import load_recipe
from diffkit.rundir import tensor_path


@pytest.fixture
def tiny_task():
    recipe = load_recipe("gmm")
    recipe["name"] = "tiny-bench"
    recipe["data"]["options"] = {"name": "ring8", "n": 1000}
    recipe["model"]["options"] = {"hidden": 32, "depth": 1}
    recipe["bench"] = {"primary": "sliced_wasserstein", "samplers": ["ddim", "dpmpp-2m"], "quick": {"train": {"steps": 30, "batch_size": 64}, "n": 200, "nfe": [5, 10], "ancestral_steps": 20}}
    registry.register("recipes", "tiny-bench", lambda: recipe)
    yield "tiny-bench"
    registry.unregister("recipes", "tiny-bench")


@pytest.fixture
def tiny_two_methods(tiny_task):
    """The tiny task by flow matching too: gmm-flow's path and parameterisation on the tiny task's data, backbone and budget."""
    diffusion = registry.load("recipes", tiny_task)()
    flow = load_recipe("gmm-flow")
    flow.update(name="tiny-bench-flow", data=diffusion["data"], model={**flow["model"], "options": diffusion["model"]["options"]}, train=diffusion["train"])
    flow["bench"] = {**diffusion["bench"], "task": tiny_task, "method": "flow-matching", "samplers": ["flow-euler", "dpmpp-2m"]}
    registry.register("recipes", "tiny-bench-flow", lambda: flow)
    yield tiny_task
    registry.unregister("recipes", "tiny-bench-flow")


def test_gmm_is_a_bench_task_by_both_methods_and_its_smoke_copy_is_not():
    tasks = discover_tasks()
    assert {m: r["name"] for m, r in tasks["gmm"].items()} == {"diffusion": "gmm", "flow-matching": "gmm-flow"}
    assert list(tasks["gmm"]) == ["diffusion", "flow-matching"]  # diffusion first
    assert "gmm-smoke" not in tasks and "gmm-flow" not in tasks


@pytest.mark.parametrize("task", ["gmm", "digits", "qm9"])
def test_a_tasks_methods_share_data_backbone_and_budget_at_every_tier(task):
    """Flow matching sits beside diffusion on one footing: per tier the same data, backbone, training budget,
    samples, NFE and guidance; only the process, the parameterisation and the samplers differ."""
    from diffkit.bench import tier_recipe

    methods = discover_tasks().get(task, {})
    if task != "gmm" and len(methods) < 2:
        pytest.skip(f"the plugin that gives task {task!r} is not installed")
    assert set(methods) == {"diffusion", "flow-matching"}
    for tier in TIERS:
        shared = []
        for recipe in methods.values():
            r, plan = tier_recipe(recipe, tier)
            shared.append((r["data"], r["model"]["backbone"], r["model"].get("options"), r["model"].get("num_classes", 0), r["train"], r.get("representation"),
                           plan["n"], plan["nfe"], plan["guidance"], plan["primary"], plan["higher_is_better"]))
        assert shared[0] == shared[1], (task, tier)


def test_a_method_name_that_cannot_name_a_folder_is_refused():
    from diffkit.bench import method_of

    assert method_of({"name": "a", "bench": {}}) == "diffusion" and method_of({"name": "a", "bench": {"method": "flow-matching"}}) == "flow-matching"
    with pytest.raises(ValueError, match="method must be lower-case words joined by hyphens"):
        method_of({"name": "a", "bench": {"method": "Flow Matching"}})


def test_quick_bench_shows_diffusion_and_flow_matching_side_by_side(tiny_two_methods, tmp_path):
    """Two recipes of one task: each method trained and sampled in its own folder, its rows marked with the method,
    the best row of each at each NFE in report.json, the methods in columns in report.md, one plot panel each."""
    run_bench("quick", [tiny_two_methods], out=tmp_path, progress=False)
    task = json.loads((tmp_path / "report.json").read_text())["tasks"][tiny_two_methods]
    assert "error" not in task, task
    assert list(task["methods"]) == ["diffusion", "flow-matching"]
    assert task["methods"]["flow-matching"]["recipe"] == "tiny-bench-flow" and task["methods"]["diffusion"]["recipe"] == "tiny-bench"
    for method, info in task["methods"].items():
        assert info["train"]["steps"] == 30 and info["train"]["items_per_second"] > 0 and info["seconds"] > 0, method
        assert (tmp_path / "tasks" / tiny_two_methods / method / "run" / "config.json").exists()
    rows = [(r["method"], r["sampler"], r["nfe"]) for r in task["rows"]]
    assert rows == [("diffusion", "ddim", 5), ("diffusion", "ddim", 10), ("diffusion", "dpmpp-2m", 5), ("diffusion", "dpmpp-2m", 10), ("diffusion", "ancestral", 20),
                    ("flow-matching", "flow-euler", 5), ("flow-matching", "flow-euler", 10), ("flow-matching", "dpmpp-2m", 5), ("flow-matching", "dpmpp-2m", 10),
                    ("flow-matching", "ancestral", 20)]
    assert all(math.isfinite(r["metrics"]["sliced_wasserstein"]) for r in task["rows"])
    assert [line["nfe"] for line in task["best_by_nfe"]] == [5, 10, 20]
    for line in task["best_by_nfe"]:
        for method in ("diffusion", "flow-matching"):
            best = min(r["metrics"]["sliced_wasserstein"] for r in task["rows"] if r["method"] == method and r["nfe"] == line["nfe"])
            assert line[method]["value"] == best
    md = (tmp_path / "report.md").read_text()
    assert "| | diffusion | flow matching |" in md and "| recipe | `tiny-bench` | `tiny-bench-flow` |" in md
    assert "### diffusion (recipe `tiny-bench`)" in md and "### flow matching (recipe `tiny-bench-flow`)" in md
    assert md.count("| flow-euler |") == 2 and md.count("| ddim |") == 2
    assert (tmp_path / "tasks" / tiny_two_methods / f"{tiny_two_methods}-sliced_wasserstein-vs-nfe.png").exists()


def test_a_failing_method_is_reported_and_the_other_still_runs(tiny_two_methods, tmp_path):
    flow = registry.load("recipes", "tiny-bench-flow")()
    flow["diffusion"] = {"x": {"process": "no-such-path"}}
    run_bench("quick", [tiny_two_methods], out=tmp_path, progress=False)
    task = json.loads((tmp_path / "report.json").read_text())["tasks"][tiny_two_methods]
    assert "error" not in task and {r["method"] for r in task["rows"]} == {"diffusion"}
    assert "no-such-path" in task["methods"]["flow-matching"]["error"] and "train" in task["methods"]["diffusion"]
    md = (tmp_path / "report.md").read_text()
    assert "### flow matching (recipe `tiny-bench-flow`)" in md and "failed: " in md


def test_quick_bench_report_structure_and_finite_figures(tiny_task, tmp_path):
    report = run_bench("quick", [tiny_task], out=tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["tier"] == "quick" and on_disk["seed"] == 0 and "machine" in on_disk
    task = on_disk["tasks"][tiny_task]
    assert "error" not in task, task
    assert list(task["methods"]) == ["diffusion"]
    train = task["methods"]["diffusion"]["train"]
    assert train["items_per_second"] > 0 and train["steps"] == train["steps_planned"] == 30
    rows = task["rows"]
    assert {r["method"] for r in rows} == {"diffusion"}
    assert [(r["sampler"], r["nfe"]) for r in rows] == [("ddim", 5), ("ddim", 10), ("dpmpp-2m", 5), ("dpmpp-2m", 10), ("ancestral", 20)]
    for r in rows:
        for key in ("seconds", "samples_per_second", "seconds_per_nfe", "peak_memory_mb"):
            assert math.isfinite(r[key]) and r[key] > 0
        assert math.isfinite(r["metrics"]["sliced_wasserstein"])
    assert (tmp_path / "report.md").read_text().count("| ddim |") == 2
    assert (tmp_path / "tasks" / tiny_task / f"{tiny_task}-sliced_wasserstein-vs-nfe.png").exists()
    assert report["tasks"][tiny_task]["rows"] == rows


def test_interrupted_bench_resumes_without_redoing_tasks(tiny_task, tmp_path):
    run_bench("quick", [tiny_task], out=tmp_path, progress=False)
    stamp = tensor_path(tmp_path / "tasks" / tiny_task / "diffusion" / "run").stat().st_mtime_ns
    run_bench("quick", [tiny_task], out=tmp_path, progress=False)
    assert tensor_path(tmp_path / "tasks" / tiny_task / "diffusion" / "run").stat().st_mtime_ns == stamp


def test_unknown_task_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="installed tasks"):
        run_bench("quick", ["no-such-task"], out=tmp_path, progress=False)


def test_a_time_budget_reports_the_steps_it_reached(tiny_task, tmp_path):
    """A tier may cap training with train.max_minutes; the report gives the steps actually trained."""
    recipe = registry.load("recipes", tiny_task)()
    recipe["bench"]["quick"]["train"] = {"steps": 100000, "batch_size": 64, "max_minutes": 0.02, "checkpoint_every": 100000}
    run_bench("quick", [tiny_task], out=tmp_path, progress=False)
    task = json.loads((tmp_path / "report.json").read_text())["tasks"][tiny_task]
    trained = json.loads((tmp_path / "tasks" / tiny_task / "diffusion" / "run" / "config.json").read_text())["step"]
    train = task["methods"]["diffusion"]["train"]
    assert train["steps_planned"] == 100000 and train["steps"] == trained < 100000
    assert f"training: {trained} steps" in (tmp_path / "report.md").read_text() and "stopped by its time budget" in (tmp_path / "report.md").read_text()


def test_a_list_of_guidance_scales_runs_every_row_at_each(tiny_task, tmp_path):
    """guidance = [w1, w2] in a tier: each sampler row is run at both scales, recorded per row, written to
    its own samples folder and shown in a guidance column; a scale that is not a number is refused."""
    from diffkit.bench import tier_recipe

    recipe = registry.load("recipes", tiny_task)()
    recipe["bench"]["quick"]["nfe"] = [5]
    recipe["bench"]["quick"]["guidance"] = [1.0, 3.0]
    run_bench("quick", [tiny_task], out=tmp_path, progress=False)
    task = json.loads((tmp_path / "report.json").read_text())["tasks"][tiny_task]
    assert "error" not in task, task
    assert [(r["sampler"], r["nfe"], r["guidance"]) for r in task["rows"]] == [
        ("ddim", 5, 1.0), ("dpmpp-2m", 5, 1.0), ("ancestral", 20, 1.0), ("ddim", 5, 3.0), ("dpmpp-2m", 5, 3.0), ("ancestral", 20, 3.0)]
    assert {p.name for p in (tmp_path / "tasks" / tiny_task / "diffusion" / "samples").iterdir()} >= {"ddim-nfe5-w1", "ddim-nfe5-w3", "ancestral-nfe20-w3"}
    md = (tmp_path / "report.md").read_text()
    assert "| sampler | NFE | guidance |" in md and "| ddim | 5 | 3 |" in md
    recipe["bench"]["quick"]["guidance"] = ["strong"]
    with pytest.raises(ValueError, match="guidance must be a number"):
        tier_recipe(recipe, "quick")


def test_spaces_with_a_duration_get_real_time_factors(tiny_task, tmp_path, monkeypatch):
    """A space whose elements last ``duration`` seconds (audio) gets, per row, the real-time factor
    seconds / (n * duration), and for training the seconds of signal per second; other spaces get neither."""
    from diffkit.spaces import AudioSequence, EuclideanSpace

    assert AudioSequence(length=4096, sample_rate=8000).duration == 0.512
    assert not hasattr(EuclideanSpace(2), "duration")
    monkeypatch.setattr(EuclideanSpace, "duration", 0.25, raising=False)
    run_bench("quick", [tiny_task], out=tmp_path, progress=False)
    task = json.loads((tmp_path / "report.json").read_text())["tasks"][tiny_task]
    assert "error" not in task, task
    assert task["seconds_per_item"] == 0.25
    train = task["methods"]["diffusion"]["train"]
    assert train["signal_seconds_per_second"] == pytest.approx(train["items_per_second"] * 0.25)
    for r in task["rows"]:
        assert r["real_time_factor"] == pytest.approx(r["seconds"] / (r["n"] * 0.25))
    md = (tmp_path / "report.md").read_text()
    assert " RTF |" in md and "s of signal per second" in md


def test_a_tier_merges_first_stage_options_key_by_key_and_replaces_its_other_keys():
    """[bench.<tier>] representation = { options = {...}, tune = {...} }: the options join the recipe's, the tune
    table (a first stage's decoder tuning, minutes of it) replaces the recipe's, so a quick tier can shorten it."""
    from diffkit.bench import tier_recipe

    recipe = {"name": "t", "train": {}, "sample": {"n": 4}, "data": {"options": {"a": 1}}, "model": {},
              "representation": {"name": "log-mel", "options": {"hop": 64, "learned_steps": 6000}, "tune": {"minutes": 5, "share": 0.8}},
              "bench": {"quick": {"representation": {"options": {"learned_steps": 20}, "tune": {"minutes": 0.05}}}}}
    tiered, _ = tier_recipe(recipe, "quick")
    assert tiered["representation"]["options"] == {"hop": 64, "learned_steps": 20} and tiered["representation"]["tune"] == {"minutes": 0.05}
    assert recipe["representation"]["tune"]["minutes"] == 5  # the recipe itself is left as it was
