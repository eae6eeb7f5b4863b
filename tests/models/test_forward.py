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
