"""The names clients may put in `model`: the served base model and its LoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass

from lingshu_server.core.errors import ModelNotFoundError
from lingshu_server.engine.lora import Adapter
from lingshu_server.protocol.common import ModelCard, ModelList


@dataclass(frozen=True)
class ModelChoice:
    name: str  # what the response reports in `model`
    adapter: str | None  # the LoRA adapter to run with, if the name is one


class ServedModels:
    def __init__(
        self,
        *,
        names: list[str],
        adapters: tuple[Adapter, ...],
        root: str,
        max_model_len: int,
        created: int,
    ):
        self._names = names
        self._adapters = {adapter.name: adapter for adapter in adapters}
        self._root = root
        self._max_model_len = max_model_len
        self._created = created

    def resolve(self, requested: str | None) -> ModelChoice:
        """The base model when `model` is absent; 404 model_not_found for an unknown name."""
        if requested is None:
            return ModelChoice(self._names[0], None)
        if requested in self._names:
            return ModelChoice(requested, None)
        if requested in self._adapters:
            return ModelChoice(requested, requested)
        available = [*self._names, *self._adapters]
        raise ModelNotFoundError(
            f"The model `{requested}` does not exist. Available: {', '.join(available)}",
            param="model",
        )

    def cards(self) -> ModelList:
        """/v1/models: the base names, then each adapter with its base as `parent` (as vLLM)."""
        created, max_model_len = self._created, self._max_model_len
        return ModelList(
            data=[
                ModelCard(id=name, root=self._root, created=created, max_model_len=max_model_len)
                for name in self._names
            ]
            + [
                ModelCard(
                    id=adapter.name,
                    root=adapter.path,
                    parent=adapter.parent,
                    created=created,
                    max_model_len=max_model_len,
                )
                for adapter in self._adapters.values()
            ]
        )
