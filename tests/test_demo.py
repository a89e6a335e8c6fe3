"""The offline demo (``python examples/digits_demo.py``, ``make demo``) end to end, and TorchScript
classifiers on arbitrary user folders through the real scan code path."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_images


# --------------------------------------------------------------------------- a user's own classifier
class TinyClassifier(torch.nn.Module):
    def __init__(self, n_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, n_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TinyEmbedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


def _save(module, path, meta):
    m = torch.jit.script(module.eval())
    m.save(str(path), _extra_files={"collapse_audit.json": json.dumps(meta)})
    return m


def _direct_argmax(model, files, size, mean, std):
    """Reference: PIL bicubic resize, [0, 1], (x - mean) / std, forward, argmax (independent of the package)."""
    xs = []
    for f in files:
        a = np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
        xs.append((a.transpose(2, 0, 1) - np.float32(mean)) / np.float32(std))
    with torch.no_grad():
        return model(torch.from_numpy(np.stack(xs))).argmax(1).numpy()


def test_torchscript_classifier_on_arbitrary_folders(tmp_path, run_cli):
    real, gen = tmp_path / "real", tmp_path / "gen"
    real_files = (write_images(real / "cats", 14, size=(40, 30), seed=1) + write_images(real / "dogs", 10, size=(30, 40), seed=2)
                  + write_images(real / "fish", 8, size=(24, 24), seed=3))
    gen_files = write_images(gen, 20, size=(36, 36), seed=4, prefix="g")
    names = ["cats", "dogs", "fish"]
    meta = {"input_size": [16, 16], "mean": [0.5], "std": [0.25]}
    torch.manual_seed(0)
    cls = _save(TinyClassifier(len(names)), tmp_path / "cls.pt", {**meta, "class_names": names})
    _save(TinyEmbedder(), tmp_path / "emb.pt", meta)
    code, out, err = run_cli("scan", gen, "--real", real, "-e", f"torchscript:{tmp_path / 'emb.pt'}",
                             "--classifier", tmp_path / "cls.pt", "--labels", "folders", "--out", tmp_path / "out",
                             "--workers", "0", "--no-report", "--kid-subsets", "5")
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    c = res["classes"]
    assert c["source"] == "torchscript"
    assert c["classifier"]["kind"] == "torchscript"
    assert [r["name"] for r in c["classes"]] == names
    # counts equal a direct forward pass of the same model on the same files
    want_gen = np.bincount(_direct_argmax(cls, gen_files, 16, 0.5, 0.25), minlength=3)
    want_real = _direct_argmax(cls, real_files, 16, 0.5, 0.25)
    assert [r["n_gen"] for r in c["classes"]] == want_gen.tolist()
    assert [r["n_real"] for r in c["classes"]] == np.bincount(want_real, minlength=3).tolist()
    truth = np.array([0] * 14 + [1] * 10 + [2] * 8)
    assert c["classifier"]["agreement"] == pytest.approx(float((want_real == truth).mean()))
    assert c["classifier"]["n_checked"] == len(real_files)
    assert res["primary_embedder"].startswith("torchscript:emb.pt:")


def test_classifier_without_class_names_is_a_usage_error(tmp_path, run_cli):
    write_images(tmp_path / "real", 6)
    write_images(tmp_path / "gen", 6, seed=3)
    _save(TinyClassifier(2), tmp_path / "cls.pt", {"input_size": [16, 16]})
    code, _, err = run_cli("scan", tmp_path / "gen", "--real", tmp_path / "real", "-e", f"torchscript:{tmp_path / 'cls.pt'}",
                           "--classifier", tmp_path / "cls.pt", "--out", tmp_path / "out", "--workers", "0", "--no-report")
    assert code == 2 and "class_names" in err and "Traceback" not in err


# --------------------------------------------------------------------------- the demo
DEMO = Path(__file__).resolve().parents[1] / "examples" / "digits_demo.py"


def _demo_main():
    """``main`` of examples/digits_demo.py (a script beside the package, not in it), loaded from its file once."""
    mod = sys.modules.get("digits_demo")
    if mod is None:
        spec = importlib.util.spec_from_file_location("digits_demo", DEMO)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["digits_demo"] = mod  # before running it: its dataclasses look their module up
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules["digits_demo"]
            raise
    return mod.main


def _cli_commands():
    import typer

    from collapse_audit.cli import app

    return typer.main.get_command(app).commands


def test_demo_quick_end_to_end(tmp_path, capsys):
    from collapse_audit.embedders import make_embedder

    main = _demo_main()
    out = tmp_path / "demo"
    assert main(["--quick", "--no-report", "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    # the real set: load_digits' 1,797 scans in one folder per digit, upscaled 8x
    counts = {d: len(list((out / "real" / str(d)).glob("*.png"))) for d in range(10)}
    assert sum(counts.values()) == 1797 and counts[0] == 178 and counts[5] == 182
    with Image.open(next((out / "real" / "3").glob("*.png"))) as im:
        assert im.size == (64, 64) and im.mode == "L"
    gen = sorted((out / "gen").glob("*.png"))
    assert len(gen) == 300 and not any(p.is_dir() for p in (out / "gen").iterdir())
    assert len(list((out / "gen_healthy").glob("*.png"))) == 300
    # the domain models load through the package's own loader, with their metadata
    emb = make_embedder(f"torchscript:{out / 'models' / 'digits_embedder.pt'}")
    cls = make_embedder(f"torchscript:{out / 'models' / 'digits_classifier.pt'}")
    assert emb.dim == 64 and cls.dim == 10 and cls.class_names == [str(d) for d in range(10)]
    assert emb.meta["input_size"] == [8, 8] and emb.meta["resample"] == "nearest"
    # nearest-neighbour downscaling recovers the 8x8 scan exactly
    from sklearn.datasets import load_digits

    d = load_digits()
    first = sorted((out / "real" / str(d.target[0])).glob("*.png"))[0]
    x = emb.preprocess(Image.open(first)).numpy()[0] * emb.meta["std"][0] + emb.meta["mean"][0]
    np.testing.assert_allclose(x, np.rint(d.images[0] / 16 * 255) / 255, atol=1e-6)
    res = json.loads((out / "out-collapsed" / "results.json").read_text())
    assert res["classes"]["source"] == "torchscript"
    assert [r["name"] for r in res["classes"]["classes"]] == [str(i) for i in range(10)]
    assert sum(r["n_real"] for r in res["classes"]["classes"]) == 1797
    assert res["clusters"]["k"] >= 2 and res["clusters"]["bins"]
    assert res["inputs"]["gen"]["n_images"] == 300
    assert json.loads((out / "out-healthy" / "results.json").read_text())["classes"]["source"] == "torchscript"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["scan_exit_codes"]) == {"collapsed", "healthy"}
    assert all(code in (0, 1) for code in summary["scan_exit_codes"].values())
    if "compare" in _cli_commands():
        assert (out / "compare.html").is_file()
    assert "What the audit found" in printed and "results.json" in printed


@pytest.mark.slow
def test_demo_default_seed_shows_the_collapse_the_readme_describes(tmp_path):
    """The README's claim, on a fresh full-size run with the default seed."""
    main = _demo_main()
    out = tmp_path / "demo"
    assert main(["--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    c, h = s["collapsed"], s["healthy"]
    assert s["classifier_test_accuracy"] > 0.9
    # the vanilla GAN drops or strongly under-produces several digit classes ...
    missing = set(c["dropped_classes"]) | {n for n in c["under_classes"] if c["gen_share"][n] < 0.5 * c["real_share"][n]}
    assert len(missing) >= 3, c
    assert s["scan_exit_codes"]["collapsed"] == 1
    # ... and the healthier generator covers more of the real data in the same run
    assert h["recall"] > c["recall"] and h["coverage"] > c["coverage"]
    assert len(h["dropped_classes"]) < len(c["dropped_classes"]) or not c["dropped_classes"]
    assert (out / "out-collapsed" / "report.html").is_file()


def test_demo_refuses_to_clear_a_folder_it_did_not_write(tmp_path, capsys):
    main = _demo_main()
    (tmp_path / "real").mkdir()
    keep = tmp_path / "real" / "mine.txt"
    keep.write_text("user data")
    assert main(["--quick", "--out", str(tmp_path)]) == 2
    assert keep.read_text() == "user data"
    assert "did not write" in capsys.readouterr().err
