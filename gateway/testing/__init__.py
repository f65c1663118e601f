"""Test support for the gateway: a stand-in `tts` model that honours the Triton contract
(`model_repository/tts/config.pbtxt`) with synthetic speech-like audio, and a launcher for the
real `tritonserver` binary that the nvidia-pytriton wheel ships."""
