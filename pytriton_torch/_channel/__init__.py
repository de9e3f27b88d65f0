"""The hop between Triton's Python-backend stub and the user's process.

A socket in the private workspace (a Unix stream socket by default; ZeroMQ ipc when
``channel="zmq"``, see ``_transport``) carries msgpack headers and small tensors as raw frames;
large tensors go through POSIX shared-memory segments that are reused and grown on demand.
The same modules run on both sides: ``_proxy`` inside the stub, ``_worker`` in the user process.
"""
