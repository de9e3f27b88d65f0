"""The hop between Triton's Python-backend stub and the user's process.

ZeroMQ (ipc sockets in the private workspace) carries msgpack headers and small tensors as raw
frames; large tensors go through POSIX shared-memory segments that are reused and grown on demand.
The same modules run on both sides: ``_proxy`` inside the stub, ``_worker`` in the user process.
"""
