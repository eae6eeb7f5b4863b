"""latentgen.models.forward: batched predictions, accuracy and layer inputs against one unbatched pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentgen.models import forward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Net(nn.Module):
    """A dropout layer makes train and eval mode give different logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(6, 9)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(9, 4)

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.fc1(x))))


def _data(n=37):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def test_predict_is_the_eval_mode_argmax_and_restores_the_mode():
    model, (x, _) = Net().train(), _data()
    with torch.no_grad():
        expected = model.eval()(x).argmax(1)
    model.train()
    got = forward.predict(model, x, batch_size=5)  # a partial last batch
    assert got.dtype == torch.long and got.device.type == "cpu" and torch.equal(got, expected)
    assert model.training
    assert forward.predict(model, x[:0]).shape == (0,)


def test_accuracy_and_the_largest_unit_outputs():
    model, (x, y) = Net().eval(), _data()
    with torch.no_grad():
        logits, hidden = model(x), model.fc1(x)
    assert forward.accuracy(model, x, y, batch_size=8) == float((logits.argmax(1) == y).double().mean())
    assert forward.accuracy(model, x[:0], y[:0]) != forward.accuracy(model, x[:0], y[:0])  # NaN
    pred, best = forward.predict_and_max_outputs(model, x, batch_size=8, watch=["fc1"])
    assert torch.equal(pred, logits.argmax(1)) and torch.equal(best["fc1"], hidden.amax(0))


def test_layer_inputs_and_head_inputs():
    model, (x, _) = Net(), _data()
    with torch.no_grad():
        head_in = torch.relu(model.fc1(x))  # eval mode: dropout is the identity
    torch.testing.assert_close(forward.layer_inputs(model, x, "out", batch_size=10), head_in)
    assert forward.head_name(model) == "out" and list(forward.linear_layers(model)) == ["fc1", "out"]
    torch.testing.assert_close(torch.from_numpy(forward.head_inputs(model, x)), head_in)
    assert model.training  # built in train mode, and left so


# --------------------------------------------------------------------------------------------
# FeatureBatches: a model's features computed once, the head run per edited copy


def _edited_copy(model):
    """A copy whose every linear layer is changed (a repair edits nothing else)."""
    import copy

    edited = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in forward.linear_layers(edited).values():
            layer.weight.add_(0.5 * torch.randn(layer.weight.shape, generator=gen))
    return edited


@pytest.mark.parametrize("arch", ["mlp", "cnn", "alexnet", "resnet18"])
def test_feature_batches_give_an_edited_heads_outputs_bit_for_bit(arch):
    from latentgen.data.datasets import load_dataset
    from latentgen.models.architectures import build_model

    model = build_model(arch, "digits", seed=0).eval()
    x = load_dataset("digits").train_x[:300]
    linears = list(forward.linear_layers(model))
    head = forward.head_name(model)
    features = forward.FeatureBatches.of(model, x, 128, linears)  # batches of 128, 128 and 44 rows
    assert features is not None and [len(b) for b in features.batches] == [128, 128, 44]
    edited = _edited_copy(model)
    hidden = [n for n in linears if n != head]
    whole = forward.predict_and_max_outputs(edited, x, 128, watch=hidden)
    cached = forward.predict_and_max_outputs(edited, x, 128, watch=hidden, features=features)
    assert not torch.equal(whole[0], forward.predict(model, x))  # the edit changes predictions
    assert torch.equal(cached[0], whole[0]) and whole[1].keys() == cached[1].keys()
    assert (whole[1] or not hidden) and all(torch.equal(cached[1][n], whole[1][n]) for n in whole[1])
    assert torch.equal(forward.layer_inputs(edited, x, head, 128, features), forward.layer_inputs(edited, x, head, 128))
    assert torch.equal(forward.predict(edited, x, 128, features=features), whole[0])


def test_feature_batches_refuse_what_they_cannot_stand_in_for():
    from latentgen.data.datasets import load_dataset
    from latentgen.models.architectures import build_model

    x = load_dataset("digits").train_x[:100]
    cnn = build_model("cnn", "digits", seed=0)
    assert forward.FeatureBatches.of(Net(), _data()[0], 8, ["fc1"]) is None  # no forward_features
    assert forward.FeatureBatches.of(cnn, x, 64, ["fcs.0", "conv1"]) is None  # conv1 runs in the features
    assert forward.FeatureBatches.of(cnn, x, 64, ["fcs.0"], max_bytes=1000) is None  # too large
    features = forward.FeatureBatches.of(cnn, x, 64, ["fcs.0"])
    with pytest.raises(ValueError, match="other inputs or another batch size"):
        forward.predict(cnn, x.clone(), 64, features=features)
    with pytest.raises(ValueError, match="other inputs or another batch size"):
        forward.predict(cnn, x, 32, features=features)
    with pytest.raises(ValueError, match="conv1 did not run in forward_head"):
        forward.layer_inputs(cnn, x, "conv1", 64, features)

    class Wrong(nn.Module):  # a head that is not the rest of forward
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) + 1

        def forward_features(self, x):
            return x.flatten(1)

        def forward_head(self, x):
            return self.fc(x)

    assert forward.FeatureBatches.of(Wrong(), x, 64, ["fc"]) is None
