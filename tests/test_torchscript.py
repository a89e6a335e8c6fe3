"""Bring-your-own TorchScript embedders: metadata in the file or on the command line,
loaded through the real pipeline and checked against a direct forward pass."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from collapse_audit.features import load_features
from conftest import write_images


class TinyNet(torch.nn.Module):
    def __init__(self, in_ch=3, dim=16):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_ch, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, dim)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def save_ts(path, meta=None, in_ch=3, dim=16, seed=0):
    torch.manual_seed(seed)
    m = torch.jit.script(TinyNet(in_ch, dim).eval())
    extra = {"collapse_audit.json": json.dumps(meta)} if meta is not None else {}
    m.save(str(path), _extra_files=extra)
    return m


def _direct(model, files, size, mean, std, gray=False):
    xs = []
    for f in files:
        img = Image.open(f).convert("L" if gray else "RGB").resize((size, size), Image.BICUBIC)
        a = np.asarray(img, dtype=np.float32) / 255.0
        a = a[None] if gray else a.transpose(2, 0, 1)
        xs.append((a - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None])
    with torch.no_grad():
        return model(torch.from_numpy(np.stack(xs))).numpy()


def test_torchscript_embedder_with_metadata_matches_direct_forward(tmp_path, run_cli):
    files = write_images(tmp_path / "imgs", 5, size=(40, 30))
    meta = {"input_size": [32, 32], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    model = save_ts(tmp_path / "m.pt", meta)
    code, out, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", f"torchscript:{tmp_path / 'm.pt'}", "--workers", "0")
    assert code == 0, err
    fs = load_features(tmp_path / "f.npz")
    ref = _direct(model, files, 32, meta["mean"], meta["std"])
    np.testing.assert_allclose(fs.features, ref, atol=1e-5)
    assert fs.embedder_id.startswith("torchscript:m.pt:sha256-")


def test_torchscript_options_on_the_command_line_override_metadata(tmp_path, run_cli):
    files = write_images(tmp_path / "imgs", 3, size=(20, 20))
    model = save_ts(tmp_path / "g.pt", None, in_ch=1, dim=4)
    spec = f"torchscript:{tmp_path / 'g.pt'}?size=16&mean=0.5&std=0.5&channels=1"
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", spec, "--workers", "0")
    assert code == 0, err
    ref = _direct(model, files, 16, [0.5], [0.5], gray=True)
    np.testing.assert_allclose(load_features(tmp_path / "f.npz").features, ref, atol=1e-5)


def test_bad_torchscript_inputs_are_one_line_errors(tmp_path, run_cli):
    write_images(tmp_path / "imgs", 2)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", f"torchscript:{tmp_path / 'junk.pt'}")
    assert code == 2 and "not a TorchScript file" in err and "Traceback" not in err
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", f"torchscript:{tmp_path / 'none.pt'}")
    assert code == 2 and "no such TorchScript file" in err
    save_ts(tmp_path / "m.pt", {"input_size": [8, 8]})
    code, _, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", f"torchscript:{tmp_path / 'm.pt'}?bogus=1")
    assert code == 2 and "unknown TorchScript option" in err
