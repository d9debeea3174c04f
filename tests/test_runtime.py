"""The runtime layer (device, precision, seeds) names the setting of the command that reads it, and the
processed-data reader reads a manifest in one place."""

from __future__ import annotations

import pytest
import torch

from lmtool.errors import ConfigError, LmtoolError
from lmtool.runtime import resolve_device, resolve_precision, seed_everything


def test_precision_and_device_errors_name_the_key_they_were_read_from():
    with pytest.raises(ConfigError, match=r"^evaluate\.precision: fp16 needs a GPU") as caught:
        resolve_precision("fp16", torch.device("cpu"), key="evaluate.precision")
    assert caught.value.key == "evaluate.precision"
    with pytest.raises(ConfigError, match=r"^train\.precision: "):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^--device: CUDA is not available"):
            resolve_device("cuda", key="--device")


def test_inference_names_its_own_section_in_precision_errors():
    """Was a plain LmtoolError made by replacing `train.` in the message."""
    from lmtool.inference import load_for_inference

    with pytest.raises(ConfigError) as caught:
        load_for_inference("no-model-needed", device="cpu", precision="fp16", section="generate")
    assert caught.value.key == "generate.precision"
    assert str(caught.value).startswith("generate.precision: fp16 needs a GPU")


def test_seed_everything_repeats_every_generator():
    import random

    import numpy as np

    seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_the_manifest_is_read_in_one_place(tmp_path):
    from lmtool.data.manifest import has_manifest, manifest_of, read_manifest

    assert read_manifest(tmp_path) is None and not has_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"kind": "finetune"}')
    assert has_manifest(tmp_path) and read_manifest(tmp_path) == {"kind": "finetune"}
    for broken in ("{not json", "[1, 2]"):
        (tmp_path / "manifest.json").write_text(broken)
        assert read_manifest(tmp_path) is None
        with pytest.raises(LmtoolError, match="manifest.json cannot be read"):
            manifest_of(tmp_path)


def test_evaluate_on_a_processed_dir_with_a_broken_manifest_is_a_usage_error(tmp_path):
    """Was a JSONDecodeError (exit 1) from evaluation/data.py's own json.loads."""
    from lmtool.config import EvaluateConfig
    from lmtool.evaluation.data import load_data

    (tmp_path / "manifest.json").write_text("{truncated")
    with pytest.raises(LmtoolError, match="manifest.json cannot be read"):
        load_data(EvaluateConfig(model="m", data=str(tmp_path)), "unused", tokenizer=None, causal=True)
