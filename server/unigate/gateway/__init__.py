"""unigate: a gRPC-native gateway for calling AI models, whoever serves them."""

__version__ = "0.1.0"
