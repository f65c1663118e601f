"""The gateway's protobuf API: `tritone/v1/tts.proto` and the Python stubs generated from it."""
