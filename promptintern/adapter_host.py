"""One loaded base model serving many LoRA adapters, one at a time, merged into its weights.

Evaluating a grid means many adapters of the same base model. Loading the base from disk for each of them
costs seconds to minutes; an :class:`AdapterHost` loads it once and switches adapters in place:

    host = AdapterHost.load("smollm2-135m")
    model = host.activate("results/x/adapters/a")   # base + adapter a, merged (a plain transformers model)
    model = host.activate("results/x/adapters/b")   # a's changes undone exactly, then b merged
    model = host.activate(None)                     # the pristine base model

``activate`` always returns the same model object. The adapter is merged with peft's ``merge_and_unload``
(the weights a user would deploy), so the timings of an adapted model stay comparable to the base model's.

Exactness. The first time an adapter touches a module, the module's own parameters (weight, and bias if it
has one) are cloned; the next ``activate`` copies the clones back before anything else happens, so the base
weights are restored bitwise (no subtraction of the LoRA delta, which would drift in bf16). Modules that peft
replaced instead of updating (``modules_to_save``, layers with their own unload method) are put back from
references kept at construction, and config attributes that peft changed (``tie_word_embeddings``) are reset.

Memory. Only the modules some adapter targeted are cloned, once each, so the host holds the base model plus
a copy of the union of the targeted weights: about one extra model for ``target_modules="all-linear"``
(everything but the embeddings), a few percent for attention-only adapters. ``snapshot_device="cpu"`` keeps
the copies in host memory instead (each switch then copies them back over PCIe). ``snapshot_bytes`` says how
much is held.

Stable storage. Restoring and merging write into the parameters' existing storage (peft 0.21 merges LoRA in
place with ``weight.data += delta``; if a merge ever rebinds a parameter, the host copies the result back into
the original storage). Parameter addresses therefore never change, which keeps CUDA graphs and compiled
decode steps captured under one adapter valid under the next.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import PromptInternError
from .models import load_model

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterError(PromptInternError, ValueError):
    """An adapter folder that cannot be served: not a LoRA adapter, or made for another base model."""

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"adapter {self.path}: {message}")


class AdapterNotFoundError(AdapterError, FileNotFoundError):
    pass


def adapter_fingerprint(folder) -> tuple:
    """(name, size, mtime) of an adapter folder's config and weight files: changes when it is rewritten."""
    out = []
    for name in ("adapter_config.json", *WEIGHT_FILES):
        try:
            st = (Path(folder) / name).stat()
        except OSError:
            continue
        out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def check_adapter_dir(path) -> dict:
    """The adapter's config, or an error naming the folder when it is missing or is not a LoRA adapter."""
    p = Path(path)
    if not p.exists():
        raise AdapterNotFoundError(p, "folder does not exist")
    if not p.is_dir():
        raise AdapterError(p, "is not a folder (expected a peft adapter folder)")
    cfg_file = p / "adapter_config.json"
    if not cfg_file.is_file():
        raise AdapterError(p, "not a LoRA adapter folder: no adapter_config.json")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise AdapterError(p, f"adapter_config.json is not valid JSON: {e}") from e
    kind = cfg.get("peft_type") if isinstance(cfg, dict) else None
    if kind != "LORA":
        raise AdapterError(p, f"not a LoRA adapter: peft_type is {kind!r}, expected 'LORA'")
    if not any((p / f).is_file() for f in WEIGHT_FILES):
        raise AdapterError(p, f"no adapter weights ({' or '.join(WEIGHT_FILES)})")
    return cfg


class AdapterHost:
    """Holds one base model and merges one LoRA adapter at a time into it; see the module docstring."""

    def __init__(self, model, tokenizer=None, *, name: str | None = None, snapshot_device: str | None = None,
                 load_seconds: float = 0.0):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(getattr(model, "config", None), "name_or_path", None) or "model"
        self.snapshot_device = snapshot_device
        self.load_seconds = load_seconds  # what loading the base cost (0 when given a loaded model)
        self.active: str | None = None  # the merged adapter's folder, None for the pristine base
        self.switches = 0
        model.eval()
        model.requires_grad_(False)  # an inference host; peft freezes the base anyway when it loads an adapter
        self._modules = dict(model.named_modules())  # name -> original module object
        self._names = {id(m): n for n, m in self._modules.items()}
        self._children = {n: dict(m._modules) for n, m in self._modules.items()}
        self._config = dict(vars(model.config)) if hasattr(model, "config") else None
        # id(parameter) -> (label, parameter, its original storage tensor, pristine clone); grows, never shrinks
        self._pristine: dict[int, tuple[str, object, object, object]] = {}
        self._dirty: set[int] = set()  # parameters the active adapter modified
        # what is merged -> the serial the model carries meanwhile (promptintern.prefix_cache.model_key): the same
        # adapter folder, unchanged on disk, merged again gives the same weights, so the same serial
        self._serials: dict = {None: model.__dict__.get("_promptintern_adapter_serial", 0)}

    @classmethod
    def load(cls, name_or_path: str, *, device: str | None = None, dtype: str | None = None,
             snapshot_device: str | None = None) -> AdapterHost:
        """Load a base model (registered name, folder or hub id) with ``models.load_model`` and host it."""
        t0 = time.perf_counter()
        model, tok = load_model(name_or_path, device=device, dtype=dtype)
        return cls(model, tok, name=str(name_or_path), snapshot_device=snapshot_device,
                   load_seconds=time.perf_counter() - t0)

    # -- public -----------------------------------------------------------------------------------------------

    def activate(self, adapter_dir: str | Path | None):
        """Undo the previous adapter exactly, then merge ``adapter_dir`` (None: stay the pristine base).
        Returns the (one) model. On any error the host is left pristine and the error names the folder."""
        self._check_open()
        self.restore()
        if adapter_dir is None:
            return self.model
        path = Path(adapter_dir)
        cfg = check_adapter_dir(path)
        try:
            self._merge(path, cfg)
        except BaseException:
            self.restore()
            raise
        self.active = str(path)
        self.switches += 1
        self._mark_changed()
        return self.model

    def _mark_changed(self) -> None:
        """Note on the model which weights it now has (a prefix KV cache encoded with other weights is stale:
        promptintern.prefix_cache.model_key): one serial per merged adapter folder as it is on disk."""
        key = None if self.active is None else (self.active, adapter_fingerprint(self.active))
        if key not in self._serials:
            self._serials[key] = max([*self._serials.values(),
                                      self.model.__dict__.get("_promptintern_adapter_serial", 0)]) + 1
        self.model.__dict__["_promptintern_adapter_serial"] = self._serials[key]

    def restore(self) -> None:
        """Back to the pristine base: modified weights copied back, replaced modules and config put back."""
        import torch

        self._check_open()
        self._restore_structure()
        with torch.no_grad():
            for pid in sorted(self._dirty):
                _, param, storage, clone = self._pristine[pid]
                if param.data_ptr() != storage.data_ptr():
                    param.data = storage
                storage.copy_(clone)
        changed = bool(self._dirty) or self.active is not None
        self._dirty.clear()
        self.active = None
        if changed:
            self._mark_changed()

    @property
    def snapshot_bytes(self) -> int:
        """Bytes held by the pristine copies of the weights adapters have touched so far."""
        return sum(c.numel() * c.element_size() for _, _, _, c in self._pristine.values())

    @property
    def snapshotted(self) -> list[str]:
        """Names of the parameters the host keeps a pristine copy of."""
        return sorted(label for label, *_ in self._pristine.values())

    def close(self) -> None:
        """Drop the model and the copies (the caller frees the accelerator's cache)."""
        self.model = self.tokenizer = None
        self._modules, self._names, self._children, self._pristine = {}, {}, {}, {}
        self._dirty = set()
        self.active = None

    # -- internals --------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.model is None:
            raise RuntimeError(f"AdapterHost for {self.name} is closed")

    def _merge(self, path: Path, cfg: dict) -> None:
        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTunerLayer

        try:
            peft_model = PeftModel.from_pretrained(self.model, str(path))
        except Exception as e:
            base = cfg.get("base_model_name_or_path")
            detail = str(e).strip().splitlines()[:3]
            hint = ""
            if isinstance(e, RuntimeError) and ("size mismatch" in str(e) or "shape" in str(e)):
                hint = f" (shapes do not match: trained for a different base model, {base!r}?)"
            raise AdapterError(path, f"cannot be loaded into base model {self.name!r}{hint}: "
                                     + " | ".join(detail)) from e
        # Snapshot every module the adapter wraps, before merging changes it.
        for module in peft_model.modules():
            if isinstance(module, BaseTunerLayer):
                self._snapshot(module.get_base_layer())
        merged = peft_model.merge_and_unload()
        if merged is not self.model:  # peft 0.21 returns the model it was given; anything else breaks the host
            raise RuntimeError(f"peft merge_and_unload returned a new model object for {path}; AdapterHost "
                               "relies on it updating the hosted model in place")
        self._rebind_moved_storage()

    def _snapshot(self, module) -> None:
        mname = self._names.get(id(module))
        if mname is None:
            raise RuntimeError(f"adapter wraps a module that is not part of the hosted model: {module!r}")
        for pname, param in module.named_parameters(recurse=False):
            pid = id(param)
            if pid not in self._pristine:
                storage = param.data
                clone = storage.detach().to(self.snapshot_device or storage.device, copy=True)
                label = f"{mname}.{pname}" if mname else pname
                self._pristine[pid] = (label, param, storage, clone)
            self._dirty.add(pid)

    def _rebind_moved_storage(self) -> None:
        """If a merge rebound a parameter to new storage, copy the values back into the original storage."""
        import torch

        with torch.no_grad():
            for pid in self._dirty:
                _, param, storage, _ = self._pristine[pid]
                if param.data_ptr() != storage.data_ptr():
                    storage.copy_(param.data)
                    param.data = storage

    def _restore_structure(self) -> None:
        """Put back any module peft replaced (and drop children it added), and reset the config."""
        for name, module in self._modules.items():
            children = self._children[name]
            if module._modules.keys() != children.keys() or any(
                module._modules[k] is not v for k, v in children.items()
            ):
                module._modules.clear()
                module._modules.update(children)
        if self._config is not None:
            cfg = vars(self.model.config)
            if cfg != self._config:
                cfg.clear()
                cfg.update(self._config)
        if "peft_config" in vars(self.model):
            del self.model.peft_config
