"""Every registered model follows one interface: features, head, embedding, head name, export hook."""

from __future__ import annotations

import pytest
import torch

from galbench.models.finetune import apply_finetune_policy
from galbench.models.registry import build_model, embed, list_models


@pytest.mark.parametrize("name", [entry.name for entry in list_models("alexnet*")])
def test_forward_is_head_of_features_and_embedding_is_penultimate(name):
    torch.manual_seed(0)
    model = build_model(name, 4).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(images)
        vector = embed(model, images)
        head = model.get_submodule(model.head_name)
        assert logits.shape == (2, 4)
        assert vector.shape == (2, model.num_features)
        torch.testing.assert_close(head(vector), logits)


def test_head_policy_trains_only_the_head():
    model = build_model("alexnet-tiny", 3)
    apply_finetune_policy(model, "head")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.6.weight", "classifier.6.bias"}
