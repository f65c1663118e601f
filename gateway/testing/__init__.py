"""Test support for the gateway: a whole serving stack on loopback (`stack`: an MLflow server,
the real `tts` model on the real `tritonserver`, API keys, a gateway) and a gateway running in a
background thread (`harness`)."""
