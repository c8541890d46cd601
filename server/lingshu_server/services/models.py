"""The names clients may put in `model`: the served base model and its LoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass

from lingshu_server.core.errors import ModelNotFoundError
from lingshu_server.engine.lora import Adapter
from lingshu_server.protocol.common import InputModality, ModelCard, ModelList
from lingshu_server.services.fingerprint import Fingerprints


@dataclass(frozen=True)
class ModelChoice:
    name: str  # what the response reports in `model`
    adapter: str | None  # the LoRA adapter to run with, if the name is one
    fingerprint: str  # the response's system_fingerprint


class ServedModels:
    def __init__(
        self,
        *,
        names: list[str],
        adapters: tuple[Adapter, ...],
        root: str,
        max_model_len: int,
        created: int,
        fingerprints: Fingerprints,
        input_modalities: list[InputModality],
    ):
        self._names = names
        self._adapters = {adapter.name: adapter for adapter in adapters}
        self._root = root
        self._max_model_len = max_model_len
        self._created = created
        self.fingerprints = fingerprints
        self.input_modalities = input_modalities

    def resolve(self, requested: str | None) -> ModelChoice:
        """The base model when `model` is absent; 404 model_not_found for an unknown name."""
        base = self.fingerprints.base
        if requested is None:
            return ModelChoice(self._names[0], None, base)
        if requested in self._names:
            return ModelChoice(requested, None, base)
        if requested in self._adapters:
            return ModelChoice(requested, requested, self.fingerprints.of(requested))
        available = [*self._names, *self._adapters]
        raise ModelNotFoundError(
            f"The model `{requested}` does not exist. Available: {', '.join(available)}",
            param="model",
        )

    def cards(self) -> ModelList:
        """/v1/models: the base names, then each adapter with its base as `parent` (as vLLM)."""
        return ModelList(
            data=[self._card(name, self._root, None) for name in self._names]
            + [
                self._card(adapter.name, adapter.path, adapter)
                for adapter in self._adapters.values()
            ]
        )

    def _card(self, name: str, root: str, adapter: Adapter | None) -> ModelCard:
        return ModelCard(
            id=name,
            root=root,
            parent=adapter.parent if adapter is not None else None,
            created=self._created,
            max_model_len=self._max_model_len,
            input_modalities=self.input_modalities,
            system_fingerprint=self.fingerprints.of(adapter.name if adapter else None),
        )
