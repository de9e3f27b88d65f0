"""Torch-native serving: binding ``nn.Module``s and torch-tensor infer functions.

Imported lazily (only when a torch feature is used) so that the proxy inside the backend stub
never pays for importing torch.
"""
