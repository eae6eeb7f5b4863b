"""VeLPIC weight transfer on small trained models: the edited network predicts exactly as VeLPIC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentgen.data.labels import corrupt_labels
from latentgen.models.forward import extract_activations
from latentgen.models.architectures import build_model
from latentgen.probing.masc_velpic import VeLPIC, fit_probes
from latentgen.probing.velpic_transfer import transfer_velpic


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(model, x, y, steps=60, seed=0):
    """A few dozen Adam steps on corrupted labels: enough to move every layer."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def trained(request, digits):
    arch = request.param
    corrupted = torch.from_numpy(corrupt_labels(digits.train_y.numpy(), 0.4, 10, seed=42))
    model = _train(build_model(arch, "digits", seed=1), digits.train_x, corrupted)
    with torch.no_grad():
        hidden = extract_activations(model, digits.train_x, [model.last_hidden])[model.last_hidden].numpy()
    velpic = VeLPIC(device="cpu").fit(hidden, corrupted.numpy(), classes=np.arange(10))
    return model, velpic, corrupted


def _network_predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1).numpy()


def _velpic_predictions(model, velpic, x):
    with torch.no_grad():
        hidden = extract_activations(model, x, [model.last_hidden])[model.last_hidden].numpy()
    assert hidden.dtype == np.float32
    return velpic.predict(hidden)


def test_edited_model_equals_velpic_on_every_row(trained, digits):
    model, velpic, _ = trained
    edited = transfer_velpic(model, model.head, velpic)
    for x in (digits.test_x, digits.train_x):
        np.testing.assert_array_equal(_network_predictions(edited, x), _velpic_predictions(model, velpic, x))
    # and the edit matters: the trained head predicts differently on some rows
    assert np.any(_network_predictions(model, digits.test_x) != _network_predictions(edited, digits.test_x))


def test_weights_bias_and_original_untouched(trained):
    model, velpic, _ = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    edited = transfer_velpic(model, model.head, velpic)
    head = edited.get_submodule(model.head)
    np.testing.assert_array_equal(head.weight.detach().numpy(), velpic.class_vectors_.astype(np.float32))
    if head.bias is not None:
        assert torch.all(head.bias == 0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    for key, value in edited.state_dict().items():  # everything but the head is the trained model
        if not key.startswith(model.head + "."):
            assert torch.equal(value, before[key])


def test_keep_bias_variant(trained, digits):
    model, velpic, _ = trained
    trained_head = model.get_submodule(model.head)
    if trained_head.bias is None:  # the CNN's pre-softmax layer has no bias
        with pytest.raises(ValueError, match="has no bias to keep"):
            transfer_velpic(model, model.head, velpic, keep_bias=True)
        return
    edited = transfer_velpic(model, model.head, velpic, keep_bias=True)
    assert torch.equal(edited.get_submodule(model.head).bias, trained_head.bias)
    with torch.no_grad():
        hidden = extract_activations(model, digits.test_x, [model.last_hidden])[model.last_hidden]
        expected = torch.nn.functional.linear(hidden, torch.from_numpy(velpic.class_vectors_).float(),
                                              trained_head.bias)
        np.testing.assert_array_equal(edited(digits.test_x).numpy(), expected.numpy())


def test_transfer_from_fit_probes_and_the_paper_network(digits):
    """The full-size MLP head (2048 → 10) with VeLPIC from ``fit_probes``, on real digits inputs
    resized into the MNIST model's 28×28 input."""
    model = build_model("mlp", "mnist", seed=3).eval()
    x = torch.nn.functional.interpolate(digits.train_x, size=28)
    with torch.no_grad():
        hidden = extract_activations(model, x, ["fc4"])["fc4"].numpy()
    _, velpic = fit_probes(hidden, digits.train_y.numpy(), device="cpu")
    edited = transfer_velpic(model, "output", velpic)
    np.testing.assert_array_equal(_network_predictions(edited, x), velpic.predict(hidden))


def test_bad_heads(trained):
    model, velpic, _ = trained
    with pytest.raises(ValueError, match="has no module named 'nope'"):
        transfer_velpic(model, "nope", velpic)
    not_linear = "act1" if model.arch == "mlp" else "conv1"
    with pytest.raises(ValueError, match=f"head '{not_linear}' is a .*, not an nn.Linear"):
        transfer_velpic(model, not_linear, velpic)
    hidden_linear = "fc1" if model.arch == "mlp" else "fcs.0"
    with pytest.raises(ValueError, match="class vectors of width .* but head"):
        transfer_velpic(model, hidden_linear, velpic)


def test_classes_must_index_the_outputs(trained, digits):
    model, _, corrupted = trained
    with torch.no_grad():
        hidden = extract_activations(model, digits.train_x, [model.last_hidden])[model.last_hidden].numpy()
    shifted = VeLPIC(device="cpu").fit(hidden, corrupted.numpy() + 1)  # labels 1..10
    with pytest.raises(ValueError, match=r"classes must be 0\.\.9"):
        transfer_velpic(model, model.head, shifted)
    nine = corrupted.numpy() < 9
    fewer = VeLPIC(device="cpu").fit(hidden[nine], corrupted.numpy()[nine])
    with pytest.raises(ValueError, match="9 class vectors"):
        transfer_velpic(model, model.head, fewer)
