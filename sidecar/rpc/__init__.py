"""The gRPC front door: the Router servicer, its codec, the standard health service, and
the code generated from proto/ (api/)."""
