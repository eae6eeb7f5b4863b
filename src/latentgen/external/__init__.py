"""Your own model: probe and repair any torch.nn.Module (latentgen.probe, latentgen.transfer), networks
from torchvision/timm/a file, image folders and label files (`latentgen probe-model`, `repair-model`)."""
