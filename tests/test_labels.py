"""Label and attribute sources: manifest, folders, CLIP zero-shot, kNN, logits, class and subgroup specs."""
import functools
import zlib

import numpy as np
import pytest
from scipy.special import softmax

from collapse_audit.errors import InputError, UsageError
from collapse_audit.labels import (
    DEFAULT_TEMPLATES,
    class_text_embeddings,
    folder_labels,
    knn_agreement,
    knn_classify,
    labels_from_logits,
    parse_classes,
    parse_subgroup,
    read_manifest,
    zero_shot_classify,
    zero_shot_subgroup,
)

# --------------------------------------------------------------------------- manifest


def _write(tmp_path, text, name="m.csv", bom=False):
    p = tmp_path / name
    p.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return p


def test_manifest_lookup_with_and_without_side(tmp_path):
    p = _write(tmp_path, "path,label,side,perceived_gender,age_group\n"
                         "cat/1.png,cat,,woman,young\n"
                         "./dog//2.png,dog,real,man,\n"
                         "dog/2.png,wolf,gen,,old\n"
                         "x.png,,,,\n", bom=True)
    m = read_manifest(p)
    assert m.attributes == ["perceived_gender", "age_group"] and m.has_labels
    labels, attrs = m.lookup("real", ["cat/1.png", "dog/2.png", "missing.png", "x.png"])
    assert labels == ["cat", "dog", None, None]
    assert attrs == {"perceived_gender": ["woman", "man", None, None], "age_group": ["young", None, None, None]}
    labels, attrs = m.lookup("gen", ["dog/2.png", "./cat/1.png"])
    assert labels == ["wolf", "cat"] and attrs["age_group"] == ["old", "young"]
    assert m.n_matched("gen", ["dog/2.png", "nope.png"]) == 1


def test_manifest_without_label_column(tmp_path):
    m = read_manifest(_write(tmp_path, "path,skin_tone\na.png,I\nb.png,VI\n"))
    assert not m.has_labels
    assert m.lookup("gen", ["b.png"]) == ([None], {"skin_tone": ["VI"]})


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "empty"),
        ("label,side\ncat,real\n", "no 'path' column"),
        ("path,label\n", "no rows"),
        ("path,label\na.png,cat\nb.png,dog\na.png,cow\n", "row 4"),
        ("path,label,side\na.png,cat,real\na.png,dog,real\n", "row 3"),
        ("path,label,side\na.png,cat,fake\n", "row 2"),
        ("path,label\na.png,cat,extra\n", "row 2"),
        ("path,label\n/abs/a.png,cat\n", "absolute"),
        ("path,label\n,cat\n", "empty path"),
    ],
)
def test_manifest_errors(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(InputError) as ei:
        read_manifest(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg and needle in msg


def test_manifest_same_path_on_both_sides_is_fine(tmp_path):
    m = read_manifest(_write(tmp_path, "path,label,side\na.png,cat,real\na.png,dog,gen\n"))
    assert m.lookup("real", ["a.png"])[0] == ["cat"] and m.lookup("gen", ["a.png"])[0] == ["dog"]


def test_manifest_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_manifest(tmp_path / "nope.csv")


def test_folder_labels():
    assert folder_labels(["cat/a.png", "dog/sub/b.png", "root.png", "./cat/c.png"]) == ["cat", "dog", None, "cat"]


# --------------------------------------------------------------------------- zero-shot


def _hash_encoder(dim=32):
    """A deterministic 'text encoder': each prompt maps to a fixed random unit vector."""

    def enc(prompts):
        out = []
        for p in prompts:
            v = np.random.default_rng(zlib.crc32(p.encode())).normal(size=dim)
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)

    return enc


def _reference_class_embeddings(names, enc, templates):
    rows = []
    for c in names:
        e = np.stack([enc([t.format(c)])[0] for t in templates]).astype(np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        m = e.mean(0)
        rows.append(m / np.linalg.norm(m))
    return np.stack(rows)


def test_prompt_ensembling_matches_direct_computation():
    enc = _hash_encoder()
    names = ["cat", "dog", "car"]
    ref = _reference_class_embeddings(names, enc, DEFAULT_TEMPLATES)
    np.testing.assert_allclose(class_text_embeddings(names, enc), ref, atol=1e-6)
    # the ensemble is not any single template's embedding
    assert not np.allclose(ref[0], enc([DEFAULT_TEMPLATES[0].format("cat")])[0], atol=1e-3)
    x = np.random.default_rng(0).normal(size=(5, 32))
    labels, probs = zero_shot_classify(x, names, enc)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref_probs = softmax(100 * xn @ ref.T, axis=1)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5)
    assert labels == [names[i] for i in ref_probs.argmax(1)]


def test_zero_shot_recovers_planted_classes():
    enc = _hash_encoder(64)
    names = [f"class{i}" for i in range(8)]
    ref = _reference_class_embeddings(names, enc, DEFAULT_TEMPLATES)
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 8, size=200)
    x = ref[truth] + 0.05 * rng.normal(size=(200, 64))
    labels, probs = zero_shot_classify(x * 3.0, names, enc)  # scale does not matter
    assert labels == [names[i] for i in truth]
    assert probs.shape == (200, 8) and np.allclose(probs.sum(1), 1)


def test_zero_shot_plumbing_with_random_weight_clip():
    from collapse_audit.embedders import clip_encode_text
    from collapse_audit.pipeline import build_embedders

    emb = build_embedders(["clip:ViT-S-32/openai"], ["random"])[0]
    enc = functools.partial(clip_encode_text, emb)
    names = ["cat", "dog", "truck"]
    x = np.random.default_rng(2).normal(size=(6, emb.dim)).astype(np.float32)
    labels, probs = zero_shot_classify(x, names, enc, templates=DEFAULT_TEMPLATES[:2])
    assert len(labels) == 6 and set(labels) <= set(names)
    assert probs.shape == (6, 3) and np.allclose(probs.sum(1), 1, atol=1e-6)
    spec = parse_subgroup("perceived_gender=a photo of a man|a photo of a woman")
    g, gp = zero_shot_subgroup(x, spec, enc)
    assert set(g) <= {"man", "woman"} and gp.shape == (6, 2)


def test_zero_shot_subgroup_is_argmax_over_prompts():
    enc = _hash_encoder()
    spec = parse_subgroup("age=young:a photo of a young person|old:a photo of an old person")
    t = enc(spec.prompts)
    x = np.stack([t[1], t[0], t[1]]) + 0.01
    labels, _ = zero_shot_subgroup(x, spec, enc)
    assert labels == ["old", "young", "old"]


def test_zero_shot_errors():
    with pytest.raises(UsageError):
        zero_shot_classify(np.zeros((1, 32)), [], _hash_encoder())
    with pytest.raises(UsageError):
        zero_shot_classify(np.zeros((1, 32)), ["a"], _hash_encoder(), templates=["no placeholder"])
    with pytest.raises(ValueError):
        zero_shot_classify(np.zeros((1, 5)), ["a"], _hash_encoder())


# --------------------------------------------------------------------------- kNN


def _clusters(n_per, seed):
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 20
    x = np.concatenate([rng.normal(size=(n_per, 16)) + c for c in centres]).astype(np.float32)
    y = [name for name in ("a", "b", "c") for _ in range(n_per)]
    return x, y


def test_knn_on_separable_clusters():
    x, y = _clusters(60, 0)
    q, qy = _clusters(30, 1)
    assert knn_classify(x, y, q, k=10) == qy
    assert knn_agreement(x, y, k=10) == 1.0


def test_knn_on_shuffled_labels_is_chance():
    x, y = _clusters(200, 2)
    y_shuffled = np.random.default_rng(3).permutation(y).tolist()
    acc = knn_agreement(x, y_shuffled, k=10)
    assert 0.2 < acc < 0.47  # chance is 1/3


def test_knn_ignores_unlabelled_and_breaks_ties_by_nearest():
    x = np.array([[0.0], [1.0], [3.0], [10.0]], dtype=np.float32)
    y = ["near", "far", None, "far"]
    # k=2 among the labelled: neighbours of 0.4 are 0 ('near') and 1 ('far'): a tie, the nearest wins
    assert knn_classify(x, y, np.array([[0.4]]), k=2) == ["near"]
    assert knn_classify(x, y, np.array([[0.6]]), k=2) == ["far"]
    # k=3: 'far' has two votes
    assert knn_classify(x, y, np.array([[0.4]]), k=3) == ["far"]
    assert knn_classify(x, y, np.zeros((0, 1)), k=3) == []


def test_labels_from_logits():
    z = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert labels_from_logits(z, ["a", "b", "c"]) == ["b", "a"]
    with pytest.raises(UsageError):
        labels_from_logits(z, ["a", "b"])


# --------------------------------------------------------------------------- specs


def test_parse_classes(tmp_path):
    assert parse_classes(" cat, dog ,cat,,bird ", None) == ["cat", "dog", "bird"]
    f = tmp_path / "c.txt"
    f.write_text("# comment\ncat\n\nhot dog, frankfurter\ncat\n")
    assert parse_classes(None, str(f)) == ["cat", "hot dog, frankfurter"]
    for args in ((" , ", None), (None, None), ("a", str(f))):
        with pytest.raises(UsageError):
            parse_classes(*args)
    with pytest.raises(InputError):
        parse_classes(None, str(tmp_path / "missing.txt"))


def test_parse_subgroup_forms():
    s = parse_subgroup("perceived_gender=a photo of a man|a photo of a woman")
    assert s.name == "perceived_gender" and s.groups == ["man", "woman"]
    assert s.prompts == ["a photo of a man", "a photo of a woman"]
    s = parse_subgroup("perceived_gender=man:a photo of a man|woman:a photo of a woman")
    assert s.groups == ["man", "woman"] and s.prompts[1] == "a photo of a woman"
    s = parse_subgroup("age=a photo of a young person.|a photo of an old person.")
    assert s.groups == ["young", "old"]
    s = parse_subgroup("skin=a photo of a person with light skin|a photo of a person with dark skin")
    assert s.groups == ["light", "dark"]
    s = parse_subgroup("x=a photo of a man|a photo of a man wearing a hat")  # prefix-only fallback
    assert s.groups == ["man", "man wearing a hat"]


@pytest.mark.parametrize(
    "spec",
    ["no equals sign", "=a|b", "attr=only one", "attr=a||b", "attr=a|a", "attr=x:a|x:b", "attr=:a|b", "a|b=c|d"],
)
def test_parse_subgroup_errors(spec):
    with pytest.raises(UsageError) as ei:
        parse_subgroup(spec)
    assert "\n" not in str(ei.value)
