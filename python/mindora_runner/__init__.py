"""mindora_runner: the Python side of mindora-worker's ``--python`` process pool.

mindora-worker (Rust) claims rq jobs, heartbeats them and records their outcomes in Redis;
for a job whose function is not built into the worker it hands the job to one of these
processes, which imports the function by its dotted name as rq does, calls it with the
job's own serializer, and sends back the serialized return value or rq's ``exc_string``.
The wire between the two is described in :mod:`mindora_runner.protocol`.
"""

from .protocol import PROTOCOL_VERSION

__version__ = "0.1.0"
__all__ = ["PROTOCOL_VERSION", "__version__"]
