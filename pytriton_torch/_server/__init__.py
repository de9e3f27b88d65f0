"""The tritonserver child process: locating the bundled binaries, the workspace, start and stop."""
